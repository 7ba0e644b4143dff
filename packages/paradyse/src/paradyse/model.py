"""The switchable transformer: one weight shard per rank and layer, four strategies that all read it.

Every rank holds, per layer, ``1/p`` of each weight (head-aligned for attention, column/row blocks
for the MLP) and a copy of the two norm vectors. Between layers activations are ``[b, s/p, h]``,
sharded along the sequence in rank order. Each strategy reads the same shard its own way, so a plan
(one strategy name per layer) is a Python dispatch: switching moves no weights and no activations.

| strategy | attention | MLP | weights used |
|---|---|---|---|
| ``megatron`` | all-gather the sequence, local heads, reduce-scatter (TP + SP) | same | the shard as a TP shard |
| ``ulysses`` | all-to-all sequence <-> heads, full-sequence attention on ``H/p`` heads | local | ZeRO-3 all-gather |
| ``ring`` | ring attention over sequence blocks, all heads | local | ZeRO-3 all-gather |
| ``metp`` | per shard ``i``: broadcast it, ring attention on its heads, accumulate | per shard | one broadcast shard at a time, recomputed in backward |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from paradyse.attention import apply_rope, local_attention, ring_attention, rope_tables
from paradyse.comm import (
    all_reduce_grads,
    broadcast_from,
    broadcast_started,
    from_zigzag,
    heads_to_seq,
    rank_and_size,
    reduce_scatter_seq,
    seq_to_heads,
    sp_column_linear,
    start_broadcast,
    start_gather,
    to_zigzag,
    zero3_linear,
)
from paradyse.config import ModelConfig, check_plan, check_sequence
from paradyse.weights import init_shard, shard_shape, weight_names

__all__ = [
    "ATTENTION",
    "MLP",
    "ParallelBlock",
    "ParallelTransformer",
    "rms_norm",
]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    # [b, s, n*d] -> [b, n, s, d]
    b, s, _ = x.shape
    return x.view(b, s, n, -1).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    # [b, n, s, d] -> [b, s, n*d]
    b, n, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, n * d)


class ParallelBlock(nn.Module):
    """One pre-norm block holding this rank's weight shards; ``forward(x, strategy)``."""

    def __init__(
        self, cfg: ModelConfig, layer: int, *, group=None, seed: int = 0, device=None, side_group=None
    ) -> None:
        super().__init__()
        self.cfg, self.layer, self.group = cfg, layer, group
        self.rank, self.p = rank_and_size(group)
        self.side_group = side_group  # overlap: prefetches run on it (ParallelTransformer makes it)
        self.pending_qkv: list | None = None
        cfg.check_degree(self.p)
        with torch.device("meta"):  # shapes only: no rank ever allocates a full weight
            for name in weight_names(cfg):
                setattr(
                    self,
                    name,
                    nn.Parameter(torch.empty(shard_shape(cfg, name, self.p), dtype=cfg.torch_dtype)),
                )
        self.to_empty(device=torch.device("cpu") if device is None else device)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int = 0) -> None:
        """Fill this rank's shards (``paradyse.weights.init_shard``): equal, concatenated over ranks, to
        the single-process weights of the same seed."""
        for name in weight_names(self.cfg):
            getattr(self, name).copy_(init_shard(self.cfg, self.layer, name, self.rank, self.p, seed=seed))

    def replicated(self) -> list[nn.Parameter]:
        return [self.attn_norm, self.mlp_norm]

    def rope(self, start: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start, start + length, device=device)
        cos, sin = rope_tables(pos, self.cfg.head_dim, self.cfg.rope_theta)
        # cast once: q and k then share one saved copy of each table
        dt = self.cfg.torch_dtype
        return cos.to(device=device, dtype=dt), sin.to(device=device, dtype=dt)

    def prefetch_qkv(self) -> None:
        """Start gathering this layer's Q, K, V weights now (the previous layer is about to compute)."""
        self.pending_qkv = _prefetch(self, [self.wq, self.wk, self.wv], 0)

    def forward(self, x: torch.Tensor, strategy: str, nxt: ParallelBlock | None = None) -> torch.Tensor:
        """``nxt``: the next layer, if it reads ZeRO-3 weights: its Q, K, V gathers start now (overlap)."""
        if nxt is not None:
            nxt.prefetch_qkv()
        eps = self.cfg.eps
        x = x + ATTENTION[strategy](self, rms_norm(x, self.attn_norm, eps))
        return x + MLP[strategy](self, rms_norm(x, self.mlp_norm, eps))


# ----------------------------------------------------------------------------------- attention


def _attn_megatron(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    cfg, p = blk.cfg, blk.p
    q, k, v = sp_column_linear(xn, [blk.wq, blk.wk, blk.wv], blk.group)  # [b, s, heads/p * d]
    s = q.shape[1]
    cos, sin = blk.rope(0, s, xn.device)
    q = apply_rope(_heads(q, cfg.heads // p), cos, sin)
    k = apply_rope(_heads(k, cfg.kv_heads // p), cos, sin)
    v = _heads(v, cfg.kv_heads // p)
    o = _merge_heads(local_attention(q, k, v, causal=cfg.causal))
    return reduce_scatter_seq(o @ blk.wo.t(), blk.group)  # partial sums over heads -> [b, s/p, h]


def _overlapped(blk: ParallelBlock) -> bool:
    return blk.cfg.overlap and blk.p > 1


def _prefetch(blk: ParallelBlock, weights: list[torch.Tensor], dim: int) -> list:
    # overlap: start every gather now (in order; each waits where its weight is used) on the side
    # group, so that prefetches never queue behind the layer's own collectives; else gather at use
    if not _overlapped(blk):
        return [None] * len(weights)
    return [start_gather(w, dim, blk.side_group) for w in weights]


def _qkv_zero3(blk: ParallelBlock, xn: torch.Tensor):
    cfg = blk.cfg
    sl = xn.shape[1]
    cos, sin = blk.rope(blk.rank * sl, sl, xn.device)
    g = blk.group
    # started by the previous layer (ParallelBlock.prefetch_qkv) or now: K's and V's travel while Q computes
    pending, blk.pending_qkv = blk.pending_qkv, None
    pq, pk, pv = pending or _prefetch(blk, [blk.wq, blk.wk, blk.wv], 0)
    q = apply_rope(_heads(zero3_linear(xn, blk.wq, 0, g, pq), cfg.heads), cos, sin)
    k = apply_rope(_heads(zero3_linear(xn, blk.wk, 0, g, pk), cfg.kv_heads), cos, sin)
    v = _heads(zero3_linear(xn, blk.wv, 0, g, pv), cfg.kv_heads)
    return q, k, v  # [b, heads, s/p, d] at global positions


def _attn_ulysses(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    q, k, v = _qkv_zero3(blk, xn)
    # [b, H, s/p, d] -> [b, s/p, H, d] -a2a-> [b, s, H/p, d] -> [b, H/p, s, d]
    q, k, v = (seq_to_heads(t.transpose(1, 2), blk.group).transpose(1, 2) for t in (q, k, v))
    o = local_attention(q, k, v, causal=blk.cfg.causal)
    o = heads_to_seq(o.transpose(1, 2), blk.group)  # [b, s/p, H, d]
    return zero3_linear(o.flatten(2), blk.wo, 1, blk.group)


def _ring(blk: ParallelBlock, q, k, v) -> torch.Tensor:
    # ring attention on [b, heads, s/p, d] at global positions; a zigzag ring moves q, k, v to zigzag
    # shards and its output back, so the layer boundary stays contiguous for every strategy
    cfg, g = blk.cfg, blk.group
    if cfg.ring_layout == "zigzag" and blk.p > 1:
        q, k, v = (to_zigzag(t, 2, g) for t in (q, k, v))
        o = ring_attention(q, k, v, causal=cfg.causal, chunk=cfg.attn_chunk, layout="zigzag",
                           overlap=cfg.overlap, group=g)  # fmt: skip
        return from_zigzag(o, 2, g)
    return ring_attention(q, k, v, causal=cfg.causal, chunk=cfg.attn_chunk, overlap=cfg.overlap, group=g)


def _attn_ring(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    q, k, v = _qkv_zero3(blk, xn)
    return zero3_linear(_merge_heads(_ring(blk, q, k, v)), blk.wo, 1, blk.group)


def _metp_attn_shard(blk: ParallelBlock, i: int, xn, wq, wk, wv, wo) -> torch.Tensor:
    cfg, p = blk.cfg, blk.p
    sl = xn.shape[1]
    cos, sin = blk.rope(blk.rank * sl, sl, xn.device)
    take = _broadcasts(blk, i, [wq, wk, wv, wo])  # overlap: K, V, O's shards travel while Q computes
    q = apply_rope(_heads(xn @ take(0).t(), cfg.heads // p), cos, sin)
    k = apply_rope(_heads(xn @ take(1).t(), cfg.kv_heads // p), cos, sin)
    v = _heads(xn @ take(2).t(), cfg.kv_heads // p)
    return _merge_heads(_ring(blk, q, k, v)) @ take(3).t()


def _broadcasts(blk: ParallelBlock, i: int, shards: list[torch.Tensor]):
    # take(j): shard i's j-th weight on every rank; with overlap all broadcasts start here, in order
    if not _overlapped(blk):
        return lambda j: broadcast_from(shards[j], i, blk.group)
    pending = [start_broadcast(w, i, blk.group) for w in shards]
    return lambda j: broadcast_started(shards[j], i, pending[j], blk.group)


def _attn_metp(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    # One shard's heads at a time; each part is recomputed in backward (its broadcast and ring run
    # again), so only the layer input and the running sum stay alive: METP's minimal activations.
    out = None
    for i in range(blk.p):
        part = checkpoint(_metp_attn_shard, blk, i, xn, blk.wq, blk.wk, blk.wv, blk.wo, use_reentrant=False)
        out = part if out is None else out + part
    return out


# ----------------------------------------------------------------------------------------- MLP


def _act(blk: ParallelBlock, gate: torch.Tensor, up: torch.Tensor | None) -> torch.Tensor:
    # gelu: gelu(w1 x); swiglu: silu(w1 x) * w3 x
    return F.gelu(gate, approximate="tanh") if up is None else F.silu(gate) * up


def _mlp_in(blk: ParallelBlock) -> list[torch.Tensor]:
    return [blk.w1, blk.w3] if blk.cfg.mlp == "swiglu" else [blk.w1]


def _mlp_megatron(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    gate, *up = sp_column_linear(xn, _mlp_in(blk), blk.group)
    return reduce_scatter_seq(_act(blk, gate, *up or [None]) @ blk.w2.t(), blk.group)


def _mlp_zero3(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    w_in = _mlp_in(blk)
    pending = _prefetch(blk, w_in, 0)
    (p2,) = _prefetch(blk, [blk.w2], 1)  # W2 travels while the up-projection computes
    gate, *up = (zero3_linear(xn, w, 0, blk.group, pw) for w, pw in zip(w_in, pending, strict=True))
    return zero3_linear(_act(blk, gate, *up or [None]), blk.w2, 1, blk.group, p2)


def _metp_mlp_shard(blk: ParallelBlock, i: int, xn, w2, *w_in) -> torch.Tensor:
    take = _broadcasts(blk, i, [*w_in, w2])
    gate, *up = (xn @ take(j).t() for j in range(len(w_in)))
    return _act(blk, gate, *up or [None]) @ take(len(w_in)).t()


def _mlp_metp(blk: ParallelBlock, xn: torch.Tensor) -> torch.Tensor:
    out = None
    for i in range(blk.p):
        part = checkpoint(_metp_mlp_shard, blk, i, xn, blk.w2, *_mlp_in(blk), use_reentrant=False)
        out = part if out is None else out + part
    return out


ATTENTION: dict[str, Callable[[ParallelBlock, torch.Tensor], torch.Tensor]] = {
    "megatron": _attn_megatron,
    "ulysses": _attn_ulysses,
    "ring": _attn_ring,
    "metp": _attn_metp,
}
MLP: dict[str, Callable[[ParallelBlock, torch.Tensor], torch.Tensor]] = {
    "megatron": _mlp_megatron,
    "ulysses": _mlp_zero3,
    "ring": _mlp_zero3,
    "metp": _mlp_metp,
}


class ParallelTransformer(nn.Module):
    """``layers`` blocks on this rank; ``forward(x [b, s/p, h], plan)`` with one strategy per layer."""

    def __init__(self, cfg: ModelConfig, *, group=None, seed: int = 0, device=None) -> None:
        super().__init__()
        self.cfg, self.group = cfg, group
        self.rank, self.p = rank_and_size(group)
        # overlap: a second group of the same ranks carries the prefetches (created by every rank)
        side = None
        if cfg.overlap and self.p > 1:
            side = dist.new_group(ranks=None if group is None else dist.get_process_group_ranks(group))
        self.blocks = nn.ModuleList(
            ParallelBlock(cfg, i, group=group, seed=seed, device=device, side_group=side)
            for i in range(cfg.layers)
        )

    def forward(self, x: torch.Tensor, plan: Sequence[str] | str) -> torch.Tensor:
        names = check_plan(plan, self.cfg.layers)
        if x.ndim != 3 or x.shape[-1] != self.cfg.hidden:
            raise ValueError(f"expected [b, s/p, {self.cfg.hidden}] activations, got {tuple(x.shape)}")
        check_sequence(x.shape[1] * self.p, self.p, self.cfg)
        for i, (block, strategy) in enumerate(zip(self.blocks, names, strict=True)):
            nxt = self.blocks[i + 1] if i + 1 < len(names) and names[i + 1] in ("ulysses", "ring") else None
            x = block(x, strategy, nxt if (self.cfg.overlap and self.p > 1) else None)
        return x

    def replicated(self) -> list[nn.Parameter]:
        return [p for b in self.blocks for p in b.replicated()]

    def finish_grads(self) -> None:
        """After backward: sum the replicated norms' gradients (sharded weights need nothing)."""
        all_reduce_grads(self.replicated(), self.group)
