"""Differentiable collectives on a process group: each forward collective has its dual in backward.

| function | forward | backward |
|---|---|---|
| :func:`all_gather` | concatenate every rank's tensor along ``dim`` | reduce-scatter the gradient |
| :func:`reduce_scatter` | sum over ranks, keep this rank's slice along ``dim`` | all-gather the gradient |
| :func:`broadcast_from` | rank ``src``'s tensor on every rank | reduce the gradient onto ``src`` |
| :func:`all_to_all` | split ``scatter_dim`` across ranks, concatenate what arrives along ``gather_dim`` | the opposite all-to-all |

:func:`gather_along` and :func:`scatter_sum_along` are the plain (not differentiable) primitives, for
autograd functions that run their own collectives. With a group of one rank (or no process group)
every function is the identity, so a single-process path runs the same code. Every collective here is
synchronous.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "all_gather",
    "all_reduce_grads",
    "all_to_all",
    "broadcast_from",
    "gather_along",
    "rank_and_size",
    "reduce_scatter",
    "scatter_sum_along",
]


def rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def gather_along(x: torch.Tensor, dim: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Every rank's ``x`` concatenated along ``dim``, in rank order."""
    _, p = rank_and_size(group)
    if p == 1:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] * p, *moved.shape[1:]))
    dist.all_gather_into_tensor(out, moved, group=group)
    return out.movedim(0, dim)


def scatter_sum_along(x: torch.Tensor, dim: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """The sum of every rank's ``x``, this rank's ``1/p`` slice along ``dim``."""
    _, p = rank_and_size(group)
    if p == 1:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] // p, *moved.shape[1:]))
    dist.reduce_scatter_tensor(out, moved, group=group)
    return out.movedim(0, dim)


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return gather_along(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return scatter_sum_along(grad, ctx.dim, ctx.group), None, None


class _ReduceScatter(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return scatter_sum_along(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return gather_along(grad, ctx.dim, ctx.group), None, None


def all_gather(x: torch.Tensor, dim: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Differentiable :func:`gather_along` (its gradient is reduce-scattered back)."""
    return _AllGather.apply(x, dim, group)


def reduce_scatter(x: torch.Tensor, dim: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Differentiable :func:`scatter_sum_along`: partial sums on every rank -> this rank's slice of the sum."""
    return _ReduceScatter.apply(x, dim, group)


class _Broadcast(torch.autograd.Function):
    @staticmethod
    def forward(ctx, shard, src, group):
        ctx.src, ctx.group = src, group
        rank, p = rank_and_size(group)
        if p == 1:
            return shard.clone()
        buf = shard.detach().clone() if rank == src else torch.empty_like(shard)
        dist.broadcast(buf, src=dist.get_global_rank(group, src) if group is not None else src, group=group)
        return buf

    @staticmethod
    def backward(ctx, grad):
        rank, p = rank_and_size(ctx.group)
        if p == 1:
            return grad, None, None
        grad = grad.contiguous().clone()
        dst = dist.get_global_rank(ctx.group, ctx.src) if ctx.group is not None else ctx.src
        dist.reduce(grad, dst=dst, group=ctx.group)
        # Only the owner's tensor fed this broadcast; elsewhere the input was a receive buffer.
        return (grad if rank == ctx.src else torch.zeros_like(grad)), None, None


def broadcast_from(shard: torch.Tensor, src: int, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Rank ``src``'s ``shard`` on every rank (every rank passes a tensor of the same shape)."""
    return _Broadcast.apply(shard, src, group)


def _a2a(x: torch.Tensor, scatter_dim: int, gather_dim: int, group) -> torch.Tensor:
    # Split scatter_dim into p chunks, send chunk j to rank j, concatenate what arrives along gather_dim.
    _, p = rank_and_size(group)
    if p == 1:
        return x
    chunks = x.movedim(scatter_dim, 0)
    n = chunks.shape[0] // p
    send = chunks.reshape(p, n, *chunks.shape[1:]).contiguous()
    recv = torch.empty_like(send)
    dist.all_to_all_single(recv, send, group=group)
    # recv[j] is rank j's chunk for us; put the source index next to gather_dim and merge them.
    out = recv.movedim(1, scatter_dim + 1)  # (p, ...x's dims, n at scatter_dim...)
    out = out.movedim(0, gather_dim)  # the source rank just before the gathered dim
    shape = list(out.shape)
    shape[gather_dim : gather_dim + 2] = [shape[gather_dim] * shape[gather_dim + 1]]
    return out.reshape(shape)


class _AllToAll(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group):
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _a2a(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _a2a(grad, gather_dim, scatter_dim, ctx.group), None, None, None


def all_to_all(
    x: torch.Tensor, scatter_dim: int, gather_dim: int, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Split ``scatter_dim`` into ``p`` chunks, send chunk ``j`` to rank ``j`` and concatenate what
    arrives along ``gather_dim`` (Ulysses' sequence <-> heads exchange); differentiable."""
    return _AllToAll.apply(x, scatter_dim, gather_dim, group)


def all_reduce_grads(params: Iterable[torch.nn.Parameter], group: dist.ProcessGroup | None = None) -> None:
    """Sum the gradients of parameters every rank holds whole but trained on part of the data."""
    _, p = rank_and_size(group)
    if p == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, group=group)
