"""Attention pieces: RoPE, local causal GQA attention (SDPA) and ring attention with an fp32 lse merge.

Ring attention (:func:`ring_attention`) keeps each rank's queries and passes key/value blocks around
the ring with batched p2p. The forward overlaps: the next block's transfer runs while the current
block is computed. The backward does not: each hop of ``(k, v, dk, dv)`` starts after the block's
gradients are computed and is waited for before the next block. Partial
outputs are merged with their log-sum-exp in fp32, forward and backward (ring-flash-attention #42:
bf16 partial merges lose accuracy as the ring grows). Under a causal mask a rank skips the blocks of
later ranks (no zigzag: activations stay in contiguous sequence shards so that strategies can switch
without moving them). Backward passes ``(k, v, dk, dv)`` around the ring and returns each block's
gradient to its owner in one last exchange.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F

from paradyse.comm import rank_and_size

__all__ = ["apply_rope", "local_attention", "ring_attention", "rope_tables"]


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


def _scores(q: torch.Tensor, k: torch.Tensor, diag: bool, scale: float, row0: int = 0) -> torch.Tensor:
    # q [b, hkv, g, sq, d] (rows row0.. of the block), k [b, hkv, sk, d] -> [b, hkv, g, sq, sk];
    # `diag`: the causal block, where key j is masked for query row i when j > i
    s = torch.matmul(q, k.unsqueeze(2).transpose(-1, -2)) * scale
    if diag:
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


def _chunks(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(n, start + chunk)


class _RingAttention(torch.autograd.Function):
    # Queries are processed in chunks of `chunk` rows so that a block's scores never exceed
    # chunk x (s/p) (the role flash attention's tiling plays on GPUs); on the causal diagonal block a
    # chunk only reads the keys up to its last row.
    @staticmethod
    def forward(ctx, q, k, v, causal, chunk, group):
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
            j = (rank - t) % p  # the owner of the block we hold at step t
            pending = _start_exchange([kk, vv], group) if t < p - 1 else None
            if not causal or j <= rank:
                diag = causal and j == rank
                for i0, i1 in _chunks(sl, chunk):
                    kend = i1 if diag else sl
                    blk_out, blk_lse = _block_rows(q, kk, vv, i0, i1, kend, diag, scale)
                    out[:, :, i0:i1], lse[:, :, i0:i1] = _merge(
                        out[:, :, i0:i1], lse[:, :, i0:i1], blk_out, blk_lse
                    )
            if pending is not None:
                _finish(pending[0])
                kk, vv = pending[1]
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.causal, ctx.chunk, ctx.group, ctx.scale, ctx.dtype = causal, chunk, group, scale, dtype
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
            j = (rank - t) % p
            if not causal or j <= rank:
                diag = causal and j == rank
                for i0, i1 in _chunks(sl, chunk):
                    kend = i1 if diag else sl
                    kc, vc = kk[:, :, :kend], vv[:, :, :kend]
                    s = _scores(qg[:, :, :, i0:i1], kc, diag, scale, row0=i0)
                    prob = torch.exp(s - lseg[:, :, :, i0:i1])  # [b, hkv, g, rows, kend]
                    dog_c = dog[:, :, :, i0:i1]
                    dv[:, :, :kend] += torch.matmul(prob.transpose(-1, -2), dog_c).sum(2)
                    dp = torch.matmul(dog_c, vc.unsqueeze(2).transpose(-1, -2))
                    ds = prob * (dp - deltag[:, :, :, i0:i1])
                    dq[:, :, :, i0:i1] += torch.matmul(ds, kc.unsqueeze(2)) * scale
                    dk[:, :, :kend] += torch.matmul(ds.transpose(-1, -2), qg[:, :, :, i0:i1]).sum(2) * scale
            if t < p - 1:
                reqs, (kk, vv, dk, dv) = _start_exchange([kk, vv, dk, dv], ctx.group)
                _finish(reqs)
        if p > 1:  # we hold block rank+1's gradients: one more hop returns each to its owner
            reqs, (dk, dv) = _start_exchange([dk, dv], ctx.group)
            _finish(reqs)
        b, _, g, sq, d = dq.shape
        dq = dq.reshape(b, hkv * g, sq, d)
        return dq.to(ctx.dtype), dk.to(ctx.dtype), dv.to(ctx.dtype), None, None, None


def _block_rows(q, k, v, i0, i1, kend, diag, scale):
    # rows i0:i1 of this rank's queries against keys 0:kend of the block held
    hkv = k.shape[1]
    s = _scores(_grouped(q[:, :, i0:i1], hkv), k[:, :, :kend], diag, scale, row0=i0)
    lse = torch.logsumexp(s, dim=-1)
    o = torch.matmul(torch.exp(s - lse.unsqueeze(-1)), v[:, :, :kend].unsqueeze(2))
    b, _, g, rows, d = o.shape
    return o.reshape(b, hkv * g, rows, d), lse.reshape(b, hkv * g, rows)


def ring_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk: int = 1024, group=None
) -> torch.Tensor:
    """Attention of this rank's ``q [b, hq, s/p, d]`` over the whole sequence's keys, passed in a ring.

    ``k, v [b, hkv, s/p, d]`` are this rank's sequence block; rank order is sequence order. Queries
    are processed ``chunk`` rows at a time (bounds the scores held at once).
    """
    return _RingAttention.apply(q, k, v, causal, chunk, group)
