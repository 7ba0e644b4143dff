"""Checkpointed segments whose recomputation a schedule can trigger ahead of the backward pass.

Merak's ``PreCheckpointFunction``: a checkpointed forward runs without building a graph and keeps
only its inputs (and the RNG state, so dropout replays identically); the backward recomputes the
forward with a graph and backpropagates through it. ``Recomputer.recompute(mb)`` does that
recomputation early, for every segment micro-batch ``mb`` ran, so a pipeline schedule can place it
while the stage would otherwise wait for the gradient to arrive ("pre-recompute"); the backward then
finds the outputs ready. Gradients equal the plain forward's (the same operations run).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["Recomputer"]


class _Segment:
    """One checkpointed call: the function, its saved inputs and RNG state, and (after recompute)
    the outputs with their graph."""

    def __init__(self, fn: Callable[..., Any], inputs: tuple[Any, ...]) -> None:
        self.fn = fn
        self.inputs = tuple(x.detach() if isinstance(x, torch.Tensor) else x for x in inputs)
        self.grad_mask = tuple(isinstance(x, torch.Tensor) and x.requires_grad for x in inputs)
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        self.replay: tuple[tuple[Any, ...], tuple[torch.Tensor, ...]] | None = None

    def recompute(self) -> None:
        if self.replay is not None:
            return
        inputs = tuple(
            x.detach().requires_grad_(need) if isinstance(x, torch.Tensor) else x
            for x, need in zip(self.inputs, self.grad_mask, strict=True)
        )
        devices = list(range(torch.cuda.device_count())) if self.cuda_rng is not None else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            torch.set_rng_state(self.cpu_rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state_all(self.cuda_rng)
            out = self.fn(*inputs)
        outputs = out if isinstance(out, tuple) else (out,)
        self.replay = (inputs, outputs)


class _CheckpointFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, segment: _Segment, anchor: torch.Tensor, *inputs: Any) -> Any:  # type: ignore[override]
        ctx.segment = segment
        with torch.no_grad():
            out = segment.fn(*inputs)
        ctx.tuple_out = isinstance(out, tuple)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        segment: _Segment = ctx.segment
        segment.recompute()
        assert segment.replay is not None
        inputs, outputs = segment.replay
        pairs = [(o, g) for o, g in zip(outputs, grads, strict=True) if o.requires_grad and g is not None]
        if pairs:
            torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        segment.replay = None  # free the recomputed graph
        return (None, None, *(x.grad if isinstance(x, torch.Tensor) and need else None
                        for x, need in zip(inputs, segment.grad_mask, strict=True)))  # fmt: skip


class Recomputer:
    """Runs checkpointed segments and remembers them by micro-batch until their backward."""

    def __init__(self) -> None:
        self.microbatch: int | None = None
        self._pending: dict[int | None, list[_Segment]] = {}

    def run(self, fn: Callable[..., Any], *inputs: Any) -> Any:
        """``fn(*inputs)`` without keeping its activations; recomputed at (or before) backward."""
        if not torch.is_grad_enabled():
            return fn(*inputs)
        segment = _Segment(fn, inputs)
        self._pending.setdefault(self.microbatch, []).append(segment)
        # `anchor` needs a gradient, so the segment joins the graph even when no input does (a first
        # stage fed token ids); otherwise its parameters would get no gradient
        anchor = torch.empty((), requires_grad=True)
        return _CheckpointFunction.apply(segment, anchor, *inputs)

    def recompute(self, microbatch: int) -> int:
        """Recompute now every segment ``microbatch`` ran; returns how many (0 when none)."""
        segments = self._pending.get(microbatch, [])
        for segment in segments:
            segment.recompute()
        return len(segments)

    def release(self, microbatch: int) -> None:
        """Forget a micro-batch's segments (after its backward)."""
        self._pending.pop(microbatch, None)
