"""Differentiable collectives on a 1-D process group: each forward collective has its dual in backward.

| function | forward | backward |
|---|---|---|
| :func:`reduce_scatter_seq` | reduce-scatter partial sums along the sequence (SP exit) | all-gather |
| :func:`sp_column_linear` | Megatron SP entry: all-gather the sequence, multiply by column shards | re-gather (nothing full-size is saved), reduce-scatter ``dx`` |
| :func:`zero3_linear` | ZeRO-3: all-gather the weight, multiply | re-gather the weight, reduce-scatter ``dW`` to its owners |
| :func:`broadcast_from` | METP: rank ``src`` sends its shard to all | reduce the gradient onto ``src`` |
| :func:`seq_to_heads` / :func:`heads_to_seq` | Ulysses all-to-all | the opposite all-to-all |

With a group of one rank every function is the identity, so the single-process path is the same code.
Every collective here is synchronous: the rank waits for it before computing on (no overlap of the
ZeRO-3 gathers or METP broadcasts with compute; only ring attention's forward overlaps its transfers,
see :mod:`paradyse.attention`).
Gradients of replicated parameters (the norms) are summed with :func:`all_reduce_grads`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist

__all__ = [
    "all_reduce_grads",
    "broadcast_from",
    "heads_to_seq",
    "rank_and_size",
    "reduce_scatter_seq",
    "seq_to_heads",
    "sp_column_linear",
    "zero3_linear",
]


def rank_and_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """``(rank, world size)`` in ``group``; ``(0, 1)`` without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_gather(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    _, p = rank_and_size(group)
    if p == 1:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] * p, *moved.shape[1:]))
    dist.all_gather_into_tensor(out, moved, group=group)
    return out.movedim(0, dim)


def _reduce_scatter(x: torch.Tensor, dim: int, group) -> torch.Tensor:
    _, p = rank_and_size(group)
    if p == 1:
        return x
    moved = x.movedim(dim, 0).contiguous()
    out = moved.new_empty((moved.shape[0] // p, *moved.shape[1:]))
    dist.reduce_scatter_tensor(out, moved, group=group)
    return out.movedim(0, dim)


class _ReduceScatterFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dim, group):
        ctx.dim, ctx.group = dim, group
        return _reduce_scatter(x, dim, group)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather(grad, ctx.dim, ctx.group), None, None


def reduce_scatter_seq(x: torch.Tensor, group=None) -> torch.Tensor:
    """Partial ``[b, s, ...]`` on every rank -> the sum's ``[b, s/p, ...]`` slice of this rank."""
    return _ReduceScatterFn.apply(x, 1, group)


class _SPColumnLinear(torch.autograd.Function):
    # y_i = all_gather_seq(x) @ w_i^T for several column-sharded weights sharing one gathered input.
    # Saves the local x only (Megatron SP): backward gathers it again for dW.
    @staticmethod
    def forward(ctx, x, group, *weights):
        ctx.group = group
        ctx.save_for_backward(x, *weights)
        full = _all_gather(x, 1, group)
        return tuple(full @ w.t() for w in weights)

    @staticmethod
    def backward(ctx, *grads):
        x, *weights = ctx.saved_tensors
        full = _all_gather(x, 1, ctx.group)
        flat = full.reshape(-1, full.shape[-1])
        dfull = sum(g @ w for g, w in zip(grads, weights, strict=True))
        dws = [g.reshape(-1, g.shape[-1]).t() @ flat for g in grads]
        return (_reduce_scatter(dfull, 1, ctx.group), None, *dws)


def sp_column_linear(x: torch.Tensor, weights: list[torch.Tensor], group=None) -> tuple[torch.Tensor, ...]:
    """Megatron TP+SP entry: ``all_gather_seq(x) @ w.T`` for each column shard ``w`` (one gather)."""
    return _SPColumnLinear.apply(x, group, *weights)


class _Zero3Linear(torch.autograd.Function):
    # y = x @ W^T with W all-gathered from shards along `dim`; saves only the shard (ZeRO-3) and
    # gathers it again in backward, where dW is reduce-scattered back to the owners.
    @staticmethod
    def forward(ctx, x, shard, dim, group):
        ctx.dim, ctx.group = dim, group
        ctx.save_for_backward(x, shard)
        return x @ _all_gather(shard, dim, group).t()

    @staticmethod
    def backward(ctx, grad):
        x, shard = ctx.saved_tensors
        w = _all_gather(shard, ctx.dim, ctx.group)
        dx = grad @ w
        dw = grad.reshape(-1, grad.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return dx, _reduce_scatter(dw, ctx.dim, ctx.group), None, None


def zero3_linear(x: torch.Tensor, shard: torch.Tensor, dim: int, group=None) -> torch.Tensor:
    """``x @ W.T`` where ``W`` is all-gathered from every rank's ``shard`` along ``dim`` (ZeRO-3)."""
    return _Zero3Linear.apply(x, shard, dim, group)


class _BroadcastFn(torch.autograd.Function):
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
        # Only the owner's shard fed this broadcast; elsewhere the input was a receive buffer.
        return (grad if rank == ctx.src else torch.zeros_like(grad)), None, None


def broadcast_from(shard: torch.Tensor, src: int, group=None) -> torch.Tensor:
    """METP: rank ``src``'s ``shard`` on every rank (every rank passes its own shard of the same shape)."""
    return _BroadcastFn.apply(shard, src, group)


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


class _A2AFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scatter_dim, gather_dim, group):
        ctx.dims, ctx.group = (scatter_dim, gather_dim), group
        return _a2a(x, scatter_dim, gather_dim, group)

    @staticmethod
    def backward(ctx, grad):
        scatter_dim, gather_dim = ctx.dims
        return _a2a(grad, gather_dim, scatter_dim, ctx.group), None, None, None


def seq_to_heads(x: torch.Tensor, group=None) -> torch.Tensor:
    """Ulysses: ``[b, s/p, H, d]`` -> ``[b, s, H/p, d]`` (rank j receives heads ``j*H/p ..``)."""
    return _A2AFn.apply(x, 2, 1, group)


def heads_to_seq(x: torch.Tensor, group=None) -> torch.Tensor:
    """Ulysses: ``[b, s, H/p, d]`` -> ``[b, s/p, H, d]``."""
    return _A2AFn.apply(x, 1, 2, group)


def all_reduce_grads(params: Iterable[torch.nn.Parameter], group=None) -> None:
    """Sum the gradients of replicated parameters (each rank saw only its sequence shard)."""
    _, p = rank_and_size(group)
    if p == 1:
        return
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad, group=group)
