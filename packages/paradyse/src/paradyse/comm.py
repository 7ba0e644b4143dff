"""paradyse's collectives: the strategies' fused ones here, the generic ones from ``effcore.distributed``.

| function | forward | backward |
|---|---|---|
| :func:`reduce_scatter_seq` | reduce-scatter partial sums along the sequence (SP exit) | all-gather |
| :func:`sp_column_linear` | Megatron SP entry: all-gather the sequence, multiply by column shards | re-gather (nothing full-size is saved), reduce-scatter ``dx`` |
| :func:`zero3_linear` | ZeRO-3: all-gather the weight, multiply | re-gather the weight, reduce-scatter ``dW`` to its owners |
| :func:`broadcast_from` | METP: rank ``src`` sends its shard to all | reduce the gradient onto ``src`` |
| :func:`seq_to_heads` / :func:`heads_to_seq` | Ulysses all-to-all | the opposite all-to-all |
| :func:`to_zigzag` / :func:`from_zigzag` | contiguous <-> zigzag sequence shards (one uneven all-to-all) | the opposite move |

With a group of one rank every function is the identity, so the single-process path is the same code.
:func:`start_gather` / :func:`start_broadcast` start a gather or broadcast asynchronously (a
:class:`Pending`); :func:`zero3_linear` and :func:`broadcast_started` then consume it where the
weight is needed, so that with ``ModelConfig.overlap`` the next weights travel while this one computes
(see :mod:`paradyse.model`). Backward collectives are synchronous.
Gradients of replicated parameters (the norms) are summed with :func:`all_reduce_grads`.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from effcore.distributed import (
    all_reduce_grads,
    all_to_all,
    broadcast_from,
    gather_along,
    rank_and_size,
    reduce_scatter,
    scatter_sum_along,
)

__all__ = [
    "Pending",
    "all_reduce_grads",
    "broadcast_from",
    "broadcast_started",
    "from_zigzag",
    "heads_to_seq",
    "rank_and_size",
    "reduce_scatter_seq",
    "seq_to_heads",
    "sp_column_linear",
    "start_broadcast",
    "start_gather",
    "to_zigzag",
    "zero3_linear",
]


def reduce_scatter_seq(x: torch.Tensor, group=None) -> torch.Tensor:
    """Partial ``[b, s, ...]`` on every rank -> the sum's ``[b, s/p, ...]`` slice of this rank."""
    return reduce_scatter(x, 1, group)


class _SPColumnLinear(torch.autograd.Function):
    # y_i = all_gather_seq(x) @ w_i^T for several column-sharded weights sharing one gathered input.
    # Saves the local x only (Megatron SP): backward gathers it again for dW.
    @staticmethod
    def forward(ctx, x, group, *weights):
        ctx.group = group
        ctx.save_for_backward(x, *weights)
        full = gather_along(x, 1, group)
        return tuple(full @ w.t() for w in weights)

    @staticmethod
    def backward(ctx, *grads):
        x, *weights = ctx.saved_tensors
        full = gather_along(x, 1, ctx.group)
        flat = full.reshape(-1, full.shape[-1])
        dfull = sum(g @ w for g, w in zip(grads, weights, strict=True))
        dws = [g.reshape(-1, g.shape[-1]).t() @ flat for g in grads]
        return (scatter_sum_along(dfull, 1, ctx.group), None, *dws)


def sp_column_linear(x: torch.Tensor, weights: list[torch.Tensor], group=None) -> tuple[torch.Tensor, ...]:
    """Megatron TP+SP entry: ``all_gather_seq(x) @ w.T`` for each column shard ``w`` (one gather)."""
    return _SPColumnLinear.apply(x, group, *weights)


class Pending:
    """An all-gather or broadcast in flight (``async_op``); :meth:`wait` returns its tensor."""

    def __init__(self, work, out: torch.Tensor, dim: int = 0) -> None:
        self.work, self.out, self.dim = work, out, dim

    def wait(self) -> torch.Tensor:
        if self.work is not None:
            self.work.wait()
            self.work = None
        return self.out.movedim(0, self.dim)


def start_gather(shard: torch.Tensor, dim: int, group=None) -> Pending:
    """Start all-gathering every rank's ``shard`` along ``dim``; the result is ``gather_along``'s."""
    _, p = rank_and_size(group)
    if p == 1:
        return Pending(None, shard.movedim(dim, 0), dim)
    moved = shard.detach().movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] * p, *moved.shape[1:]))
    return Pending(dist.all_gather_into_tensor(out, moved, group=group, async_op=True), out, dim)


class _Zero3Linear(torch.autograd.Function):
    # y = x @ W^T with W all-gathered from shards along `dim` (or taken from a gather started
    # earlier, `pending`: the overlapped path); saves only the shard (ZeRO-3) and gathers it again
    # in backward, where dW is reduce-scattered back to the owners.
    @staticmethod
    def forward(ctx, x, shard, dim, group, pending):
        ctx.dim, ctx.group = dim, group
        ctx.save_for_backward(x, shard)
        full = gather_along(shard, dim, group) if pending is None else pending.wait()
        return x @ full.t()

    @staticmethod
    def backward(ctx, grad):
        x, shard = ctx.saved_tensors
        w = gather_along(shard, ctx.dim, ctx.group)
        dx = grad @ w
        dw = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return dx, scatter_sum_along(dw, ctx.dim, ctx.group), None, None, None


def zero3_linear(
    x: torch.Tensor, shard: torch.Tensor, dim: int, group=None, pending: Pending | None = None
) -> torch.Tensor:
    """``x @ W.T`` where ``W`` is all-gathered from every rank's ``shard`` along ``dim`` (ZeRO-3);
    ``pending``: that gather, started earlier by :func:`start_gather` (prefetch)."""
    return _Zero3Linear.apply(x, shard, dim, group, pending)


def start_broadcast(shard: torch.Tensor, src: int, group=None) -> Pending:
    """Start broadcasting rank ``src``'s ``shard`` (every rank passes a tensor of its shape)."""
    rank, p = rank_and_size(group)
    buf = shard.detach().clone() if (rank == src or p == 1) else torch.empty_like(shard)
    if p == 1:
        return Pending(None, buf)
    root = dist.get_global_rank(group, src) if group is not None else src
    return Pending(dist.broadcast(buf, src=root, group=group, async_op=True), buf)


class _BroadcastWait(torch.autograd.Function):
    # METP's broadcast of shard `src`, started earlier (`pending`); backward as broadcast_from's:
    # the gradient is reduced onto the owner
    @staticmethod
    def forward(ctx, shard, src, group, pending):
        ctx.src, ctx.group = src, group
        return pending.wait()

    @staticmethod
    def backward(ctx, grad):
        rank, p = rank_and_size(ctx.group)
        if p == 1:
            return grad, None, None, None
        grad = grad.contiguous().clone()
        dst = dist.get_global_rank(ctx.group, ctx.src) if ctx.group is not None else ctx.src
        dist.reduce(grad, dst=dst, group=ctx.group)
        return (grad if rank == ctx.src else torch.zeros_like(grad)), None, None, None


def broadcast_started(shard: torch.Tensor, src: int, pending: Pending, group=None) -> torch.Tensor:
    """Differentiable :func:`broadcast_from` of a broadcast :func:`start_broadcast` began."""
    return _BroadcastWait.apply(shard, src, group, pending)


def seq_to_heads(x: torch.Tensor, group=None) -> torch.Tensor:
    """Ulysses: ``[b, s/p, H, d]`` -> ``[b, s, H/p, d]`` (rank j receives heads ``j*H/p ..``)."""
    return all_to_all(x, 2, 1, group)


def heads_to_seq(x: torch.Tensor, group=None) -> torch.Tensor:
    """Ulysses: ``[b, s, H/p, d]`` -> ``[b, s/p, H, d]``."""
    return all_to_all(x, 1, 2, group)


# Zigzag layout: the sequence in 2p chunks; contiguous rank r holds chunks 2r, 2r+1, zigzag rank r
# holds chunks r and 2p-1-r (paradyse.attention.ring_segments).
def _contiguous_chunks(rank: int, p: int) -> list[int]:
    return [2 * rank, 2 * rank + 1]


def _zigzag_chunks(rank: int, p: int) -> list[int]:
    return [rank, 2 * p - 1 - rank]


def _owner(chunk: int, p: int, layout: str) -> int:
    if layout == "contiguous":
        return chunk // 2
    return chunk if chunk < p else 2 * p - 1 - chunk


def _move_chunks(x: torch.Tensor, dim: int, src: str, dst: str, group) -> torch.Tensor:
    # one all_to_all_single: chunks go out ordered by (receiver, chunk id) and arrive ordered by
    # (sender, chunk id), then are put in the receiver's local order
    rank, p = rank_and_size(group)
    held = _contiguous_chunks(rank, p) if src == "contiguous" else _zigzag_chunks(rank, p)
    wanted = _contiguous_chunks(rank, p) if dst == "contiguous" else _zigzag_chunks(rank, p)
    if x.shape[dim] % 2:
        raise ValueError(f"a zigzag move needs an even local length, got {x.shape[dim]}")
    xs = x.movedim(dim, 0)
    c = xs.shape[0] // 2
    pieces = dict(zip(held, xs.split(c), strict=True))
    out_order = sorted(held, key=lambda m: (_owner(m, p, dst), m))
    in_order = sorted(wanted, key=lambda m: (_owner(m, p, src), m))
    send = torch.cat([pieces[m] for m in out_order]).contiguous()
    recv = torch.empty_like(send)
    splits_out = [c * sum(_owner(m, p, dst) == r for m in held) for r in range(p)]
    splits_in = [c * sum(_owner(m, p, src) == r for m in wanted) for r in range(p)]
    dist.all_to_all_single(recv, send, splits_in, splits_out, group=group)
    got = dict(zip(in_order, recv.split(c), strict=True))
    return torch.cat([got[m] for m in wanted]).movedim(0, dim)


class _Relayout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, src, dst, group):
        ctx.dim, ctx.src, ctx.dst, ctx.group = dim, src, dst, group
        return _move_chunks(x, dim, src, dst, group)

    @staticmethod
    def backward(ctx, grad):
        return _move_chunks(grad.contiguous(), ctx.dim, ctx.dst, ctx.src, ctx.group), None, None, None, None


def to_zigzag(x: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    """Contiguous sequence shards (along ``dim``) -> zigzag shards: rank ``r`` gets chunks ``r, 2p-1-r``."""
    if rank_and_size(group)[1] == 1:
        return x
    return _Relayout.apply(x, dim, "contiguous", "zigzag", group)


def from_zigzag(x: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    """Zigzag sequence shards (along ``dim``) -> contiguous ones (the inverse of :func:`to_zigzag`)."""
    if rank_and_size(group)[1] == 1:
        return x
    return _Relayout.apply(x, dim, "zigzag", "contiguous", group)
