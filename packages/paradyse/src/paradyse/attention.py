"""Attention pieces: RoPE, local causal GQA attention (SDPA) and ring attention with an fp32 lse merge.

Ring attention (:func:`ring_attention`) keeps each rank's queries and passes key/value blocks around
the ring with batched p2p. The forward overlaps: the next block's transfer runs while the current
block is computed. The backward overlaps with ``overlap=True`` (``ModelConfig.overlap``): ``k, v``
for the next block go out before this block's gradients are computed, ``dk, dv`` after; without it
each hop of ``(k, v, dk, dv)`` starts after the block's gradients are computed. Partial
outputs are merged with their log-sum-exp in fp32, forward and backward (ring-flash-attention #42:
bf16 partial merges lose accuracy as the ring grows). Under a causal mask a rank skips the blocks of
later ranks (no zigzag: activations stay in contiguous sequence shards so that strategies can switch
without moving them). Backward passes ``(k, v, dk, dv)`` around the ring and returns each block's
gradient to its owner in one last exchange.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from paradyse.comm import rank_and_size
from paradyse.config import RING_LAYOUTS

__all__ = [
    "RingBlock",
    "apply_rope",
    "local_attention",
    "ring_attention",
    "ring_blocks",
    "ring_score_elements",
    "ring_segments",
    "rope_tables",
]


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape ``[len(positions), head_dim/2]`` in fp64 (cast to the activations' dtype)."""
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    ang = positions.to(torch.float64)[:, None] * inv[None, :]
    return ang.cos(), ang.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE on ``x [b, heads, s, d]`` with tables for those ``s`` positions."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    c, s = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Attention of ``q [b, hq, s, d]`` over ``k, v [b, hkv, s, d]`` (GQA by repeating KV heads)."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def _grouped(q: torch.Tensor, hkv: int) -> torch.Tensor:
    b, hq, s, d = q.shape
    return q.view(b, hkv, hq // hkv, s, d)


def _scores(q: torch.Tensor, k: torch.Tensor, masked: bool, scale: float, row0: int = 0) -> torch.Tensor:
    # q [b, hkv, g, sq, d], k [b, hkv, sk, d] -> [b, hkv, g, sq, sk]; `masked`: key j is masked for
    # query row i when j > row0 + i (row0: the first row's offset from the keys' first position)
    s = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)) * scale
    if masked:
        sq, sk = s.shape[-2:]
        rows = torch.arange(row0, row0 + sq, device=s.device)[:, None]
        mask = torch.arange(sk, device=s.device)[None, :] > rows
        s = s.masked_fill(mask, float("-inf"))
    return s


def _merge(out, lse, blk_out, blk_lse):
    new = torch.logaddexp(lse, blk_lse)
    out = out * torch.exp(lse - new).unsqueeze(-1) + blk_out * torch.exp(blk_lse - new).unsqueeze(-1)
    return out, new


def _start_exchange(tensors: list[torch.Tensor], group) -> tuple[list, list[torch.Tensor]]:
    rank, p = rank_and_size(group)
    nxt, prv = (rank + 1) % p, (rank - 1) % p
    if group is not None:
        nxt, prv = dist.get_global_rank(group, nxt), dist.get_global_rank(group, prv)
    recv = [torch.empty_like(t) for t in tensors]
    ops = [dist.P2POp(dist.isend, t, nxt, group) for t in tensors]
    ops += [dist.P2POp(dist.irecv, r, prv, group) for r in recv]
    return dist.batch_isend_irecv(ops), recv


def _finish(reqs: list) -> None:
    for req in reqs:
        req.wait()


def ring_segments(rank: int, p: int, local_len: int, layout: str) -> list[tuple[int, int]]:
    """``(first global position, length)`` of each piece of ``rank``'s sequence shard, in local order.

    ``contiguous``: one piece, positions ``rank * s/p ..``; ``zigzag``: the sequence cut into ``2p``
    chunks, rank ``r`` holding chunks ``r`` and ``2p - 1 - r`` (an early and a late one, so that every
    rank has the same causal work)."""
    if layout not in RING_LAYOUTS:
        raise ValueError(f"unknown ring layout {layout!r}; choose from {', '.join(RING_LAYOUTS)}")
    if layout == "contiguous" or p == 1:
        return [(rank * local_len, local_len)]
    if local_len % 2:
        raise ValueError(f"a zigzag shard holds two equal chunks; its length {local_len} is odd")
    c = local_len // 2
    return [(rank * c, c), ((2 * p - 1 - rank) * c, c)]


@dataclass(frozen=True, slots=True)
class RingBlock:
    """Query rows ``q0:q1`` against key rows ``k0:k1`` of the block held; ``masked``: causal inside,
    key ``k0 + j`` masked for query ``q0 + i`` when ``j > i + shift``."""

    q0: int
    q1: int
    k0: int
    k1: int
    masked: bool
    shift: int


def ring_blocks(
    rank: int, owner: int, p: int, local_len: int, *, causal: bool, layout: str
) -> list[RingBlock]:
    """The score blocks ``rank``'s queries compute against the keys of ``owner``'s shard (causal: only
    the pieces where some key precedes some query; masked where they overlap)."""
    blocks = []
    qoff = 0
    for qs, ql in ring_segments(rank, p, local_len, layout):
        koff = 0
        for ks, kl in ring_segments(owner, p, local_len, layout):
            if not causal or ks + kl - 1 <= qs:
                blocks.append(RingBlock(qoff, qoff + ql, koff, koff + kl, False, 0))
            elif ks <= qs + ql - 1:
                blocks.append(RingBlock(qoff, qoff + ql, koff, koff + kl, True, qs - ks))
            koff += kl
        qoff += ql
    return blocks


def _block_chunks(blk: RingBlock, chunk: int):
    # (i0, i1, kend, row0): query rows i0:i1 against keys k0:kend; under the mask a chunk reads only
    # the keys up to its last row's position
    for i0 in range(blk.q0, blk.q1, chunk):
        i1 = min(blk.q1, i0 + chunk)
        row0 = i0 - blk.q0 + blk.shift
        kend = min(blk.k1, blk.k0 + row0 + (i1 - i0)) if blk.masked else blk.k1
        if kend > blk.k0:
            yield i0, i1, kend, row0


def ring_score_elements(rank: int, p: int, local_len: int, *, causal: bool, layout: str, chunk: int) -> int:
    """Score entries ``rank`` computes in one forward (per query head and batch row): its share of
    the attention FLOPs, from the same block schedule the ring runs."""
    total = 0
    for t in range(p):
        for blk in ring_blocks(rank, (rank - t) % p, p, local_len, causal=causal, layout=layout):
            total += sum((i1 - i0) * (kend - blk.k0) for i0, i1, kend, _ in _block_chunks(blk, chunk))
    return total


class _RingAttention(torch.autograd.Function):
    # Queries are processed in chunks of `chunk` rows so that a block's scores never exceed
    # chunk x (s/p) (the role flash attention's tiling plays on GPUs); under the causal mask a
    # chunk only reads the keys up to its last row.
    @staticmethod
    def forward(ctx, q, k, v, causal, chunk, layout, overlap, group):
        rank, p = rank_and_size(group)
        dtype = q.dtype
        acc = torch.promote_types(dtype, torch.float32)  # fp32 (fp64 stays fp64) for the lse merge
        q, k, v = q.to(acc), k.to(acc).contiguous(), v.to(acc).contiguous()
        scale = 1.0 / math.sqrt(q.shape[-1])
        out = torch.zeros_like(q)
        lse = torch.full(q.shape[:-1], float("-inf"), dtype=acc, device=q.device)
        sl = q.shape[2]
        kk, vv = k, v
        for t in range(p):
            pending = _start_exchange([kk, vv], group) if t < p - 1 else None
            for blk in ring_blocks(rank, (rank - t) % p, p, sl, causal=causal, layout=layout):
                for i0, i1, kend, row0 in _block_chunks(blk, chunk):
                    blk_out, blk_lse = _block_rows(q, kk, vv, i0, i1, blk.k0, kend, blk.masked, row0, scale)
                    out[:, :, i0:i1], lse[:, :, i0:i1] = _merge(
                        out[:, :, i0:i1], lse[:, :, i0:i1], blk_out, blk_lse
                    )
            if pending is not None:
                _finish(pending[0])
                kk, vv = pending[1]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.chunk, ctx.layout, ctx.overlap, ctx.group = causal, chunk, layout, overlap, group
        ctx.scale, ctx.dtype = scale, dtype
        return out.to(dtype)

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        rank, p = rank_and_size(ctx.group)
        scale, causal, chunk = ctx.scale, ctx.causal, ctx.chunk
        hkv = k.shape[1]
        dout = dout.to(q.dtype)
        delta = (dout * out).sum(-1)  # D_i = sum_d dO_i O_i
        qg, dog = _grouped(q, hkv), _grouped(dout, hkv)
        lseg, deltag = _grouped(lse.unsqueeze(-1), hkv), _grouped(delta.unsqueeze(-1), hkv)
        dq = torch.zeros_like(qg)
        sl = q.shape[2]
        kk, vv = k, v
        dk, dv = torch.zeros_like(k), torch.zeros_like(v)
        for t in range(p):
            # overlap: the next step's k, v travel while this step computes; dk, dv follow after it
            early = _start_exchange([kk, vv], ctx.group) if (ctx.overlap and t < p - 1) else None
            for blk in ring_blocks(rank, (rank - t) % p, p, sl, causal=causal, layout=ctx.layout):
                for i0, i1, kend, row0 in _block_chunks(blk, chunk):
                    k0 = blk.k0
                    kc, vc = kk[:, :, k0:kend], vv[:, :, k0:kend]
                    s = _scores(qg[:, :, :, i0:i1], kc, blk.masked, scale, row0=row0)
                    prob = torch.exp(s - lseg[:, :, :, i0:i1])  # [b, hkv, g, rows, keys]
                    dog_c = dog[:, :, :, i0:i1]
                    dv[:, :, k0:kend] += torch.matmul(prob.transpose(-1, -2), dog_c).sum(2)
                    dp = torch.matmul(dog_c, vc.unsqueeze(2).transpose(-1, -2))
                    ds = prob * (dp - deltag[:, :, :, i0:i1])
                    dq[:, :, :, i0:i1] += torch.matmul(ds, kc.unsqueeze(2)) * scale
                    dk[:, :, k0:kend] += torch.matmul(ds.transpose(-1, -2), qg[:, :, :, i0:i1]).sum(2) * scale
            if early is not None:
                reqs, (dk, dv) = _start_exchange([dk, dv], ctx.group)
                _finish(reqs)
                _finish(early[0])
                kk, vv = early[1]
            elif t < p - 1:
                reqs, (kk, vv, dk, dv) = _start_exchange([kk, vv, dk, dv], ctx.group)
                _finish(reqs)
        if p > 1:  # we hold block rank+1's gradients: one more hop returns each to its owner
            reqs, (dk, dv) = _start_exchange([dk, dv], ctx.group)
            _finish(reqs)
        b, _, g, sq, d = dq.shape
        dq = dq.reshape(b, hkv * g, sq, d)
        return dq.to(ctx.dtype), dk.to(ctx.dtype), dv.to(ctx.dtype), None, None, None, None, None


def _block_rows(q, k, v, i0, i1, k0, kend, masked, row0, scale):
    # rows i0:i1 of this rank's queries against keys k0:kend of the block held
    hkv = k.shape[1]
    s = _scores(_grouped(q[:, :, i0:i1], hkv), k[:, :, k0:kend], masked, scale, row0=row0)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v[:, :, k0:kend].unsqueeze(2))
    b, _, g, rows, d = o.shape
    return o.reshape(b, hkv * g, rows, d), lse.reshape(b, hkv * g, rows)


def ring_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk: int = 1024,
    layout: str = "contiguous", overlap: bool = False, group=None,
) -> torch.Tensor:  # fmt: skip
    """Attention of this rank's ``q [b, hq, s/p, d]`` over the whole sequence's keys, passed in a ring.

    ``k, v [b, hkv, s/p, d]`` are this rank's sequence shard, laid out as ``layout`` says
    (:func:`ring_segments`: ``contiguous``, rank order is sequence order; ``zigzag``, two chunks).
    Queries are processed ``chunk`` rows at a time (bounds the scores held at once). The forward
    always sends the next block while computing on this one; ``overlap`` does the same for the
    backward's ``k, v`` (their gradients travel after the block's compute, as they must).
    """
    return _RingAttention.apply(q, k, v, causal, chunk, layout, overlap, group)
