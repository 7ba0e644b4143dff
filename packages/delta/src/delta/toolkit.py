"""The survey's memory techniques as small wrappers over torch's own APIs: mixed precision, checkpoint
policies, chunking."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from effcore.errors import ConfigError

__all__ = [
    "CHECKPOINT_POLICIES",
    "PRECISIONS",
    "Checkpointed",
    "MixedPrecision",
    "checkpoint_context",
    "chunk_map",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
CheckpointPolicyName = Literal["recompute-all", "save-matmuls"]
CHECKPOINT_POLICIES: tuple[str, ...] = get_args(CheckpointPolicyName)

_MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.convolution.default,
    torch.ops.aten._scaled_dot_product_flash_attention.default,
    torch.ops.aten._scaled_dot_product_efficient_attention.default,
}


@dataclass(kw_only=True, slots=True)
class MixedPrecision:
    """bf16 autocast over fp32 master weights, or fp16 autocast with dynamic loss scaling (GradScaler).

    The parameters stay fp32 (the master copy the optimizer updates); autocast runs matmuls in the low
    precision. ``backward(loss)`` and ``step(optimizer)`` apply the scaler for fp16, plain calls otherwise.
    """

    precision: str = "bf16"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}", hint=f"choose from {', '.join(PRECISIONS)}"
            )
        if self.precision == "fp16":
            self.scaler = torch.amp.GradScaler(self.device.type)

    @property
    def dtype(self) -> torch.dtype:
        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        """The forward's context: autocast to :attr:`dtype` (nothing for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Optimizer step (fp16: unscale, skip on inf/nan, update the scale)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()


def _save_matmuls(ctx: Any, op: Any, *args: Any, **kwargs: Any) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _MATMULS else CheckpointPolicy.PREFER_RECOMPUTE


def checkpoint_context(policy: str) -> Callable[[], tuple[Any, Any]] | None:
    """``context_fn`` for ``torch.utils.checkpoint``: None recomputes everything; ``save-matmuls`` keeps
    matmul/conv/attention outputs and recomputes the cheap ops around them (selective checkpointing)."""
    if policy not in CHECKPOINT_POLICIES:
        raise ConfigError(
            f"unknown checkpoint policy {policy!r}", hint=f"choose from {', '.join(CHECKPOINT_POLICIES)}"
        )
    if policy == "recompute-all":
        return None
    return functools.partial(create_selective_checkpoint_contexts, _save_matmuls)


class Checkpointed(nn.Module):
    """``module`` whose forward runs under ``torch.utils.checkpoint`` (non-reentrant) with ``policy``."""

    def __init__(self, module: nn.Module, policy: str = "recompute-all") -> None:
        super().__init__()
        self.module = module
        self.policy = policy
        self._context_fn = checkpoint_context(policy)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        extra = {} if self._context_fn is None else {"context_fn": self._context_fn}
        return checkpoint(self.module, *args, use_reentrant=False, **extra, **kwargs)


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def chunk_map(fn: Callable[..., torch.Tensor], chunked: dict[str, torch.Tensor], *, dim: int, chunk_size: int | None,
              out_dim: int | None = None, **shared: Any) -> torch.Tensor:  # fmt: skip
    """``fn(**chunked, **shared)`` computed ``chunk_size`` rows of ``dim`` at a time and concatenated along
    ``out_dim`` (default ``dim``; OpenFold's ``chunk_layer``): exact when rows are independent, with a peak of one chunk's
    temporaries. ``chunk_size=None`` calls ``fn`` once."""
    if chunk_size is None:
        return fn(**chunked, **shared)
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be at least 1, got {chunk_size}")
    sizes = {t.shape[dim] for t in chunked.values()}
    if len(sizes) != 1:
        raise ConfigError(f"chunked inputs disagree on dim {dim}: sizes {sorted(sizes)}")
    n = sizes.pop()
    parts = [fn(**{k: v[(slice(None),) * (dim % v.dim()) + (s,)] for k, v in chunked.items()}, **shared)
             for s in _chunks(n, chunk_size)]  # fmt: skip
    return torch.cat(parts, dim=dim if out_dim is None else out_dim)
