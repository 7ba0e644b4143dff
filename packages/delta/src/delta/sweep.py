"""Evoformer memory and time against sequence length, for each memory technique."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from delta.api import Delta
from delta.evoformer import EvoformerConfig, EvoformerStack, evoformer_loss
from delta.toolkit import MixedPrecision
from effcore.errors import ConfigError
from effcore.profiling import track_memory

__all__ = ["FORMS", "SweepRow", "evoformer_sweep"]

FORMS = ("plain", "chunked", "checkpoint", "bf16", "delta")


@dataclass(kw_only=True, slots=True)
class SweepRow:
    """One form at one length: MemTracker's live-tensor peak (every tensor, transients included) and,
    for the plain and delta forms, delta's meter (parameters, gradients, saved tensors held); seconds of
    one training step without any tracker (delta: the planned step after the profiled one)."""

    form: str
    residues: int
    live_peak: int | None
    held_peak: int | None
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def _model(form: str, cfg: EvoformerConfig, chunk: int) -> EvoformerStack:
    if form == "chunked":
        return EvoformerStack(cfg, chunk_size=chunk)
    if form == "checkpoint":
        return EvoformerStack(cfg, checkpoint="recompute-all")
    return EvoformerStack(cfg)


def evoformer_sweep(lengths: Sequence[int], forms: Sequence[str], *, cfg: EvoformerConfig | None = None,
                    chunk: int = 4, delta_fraction: float = 0.5, bandwidth: float | None = None,
                    progress: Callable[[str], None] | None = None) -> list[SweepRow]:  # fmt: skip
    """Train one step of the stack per (form, length) on CPU and measure it.

    ``delta``: DELTA with a budget of parameters + gradients + ``delta_fraction`` of what the plain step
    saves (its first step profiles; the second, planned one is measured). CPU only: MemTracker counts
    host copies as live CPU tensors, so the delta form is reported by delta's meter instead.
    """
    bad = [f for f in forms if f not in FORMS]
    if bad:
        raise ConfigError(f"unknown forms {bad}", hint=f"choose from {', '.join(FORMS)}")
    if not 0 < delta_fraction <= 1:
        raise ConfigError(f"delta_fraction must be in (0, 1], got {delta_fraction}")
    if not lengths or min(lengths) < 2:
        raise ConfigError(f"lengths must be at least 2 residues, got {list(lengths)}")
    cfg = cfg or EvoformerConfig()
    rows = []
    for n in lengths:
        for form in forms:
            if progress is not None:
                progress(f"{form} N={n}")
            model = _model(form, cfg, chunk)
            m, z = model.inputs(n, torch.Generator().manual_seed(n))
            if form == "delta":
                rows.append(_delta_row(model, m, z, n, delta_fraction, bandwidth))
                continue
            precision = MixedPrecision(precision="bf16" if form == "bf16" else "fp32")

            def step(model=model, m=m, z=z, precision=precision) -> None:
                with precision.autocast():
                    loss = evoformer_loss(model, m, z)
                precision.backward(loss)

            breakdown = track_memory(model, None, step, inputs=(m, z))  # MemTracker slows the step: not timed
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            step()
            seconds = time.perf_counter() - t0
            held = None
            if form == "plain":  # what delta's meter sees with nothing released, beside the delta form
                model.zero_grad(set_to_none=True)
                held = Delta(model, policy="none", bandwidth=bandwidth).plan_for(lambda m, z: step(), m, z)
                held = held.projected.peak
            rows.append(
                SweepRow(form=form, residues=n, live_peak=breakdown.peak, held_peak=held, seconds=seconds)
            )
    return rows


def _delta_row(model: EvoformerStack, m: torch.Tensor, z: torch.Tensor, n: int, fraction: float,
               bandwidth: float | None) -> SweepRow:  # fmt: skip
    def step(m: torch.Tensor, z: torch.Tensor) -> None:
        evoformer_loss(model, m, z).backward()

    probe = Delta(model, policy="none", bandwidth=bandwidth)
    trace = probe.plan_for(step, m, z).trace
    budget = trace.static_bytes + int(fraction * trace.saved_bytes())
    runner = Delta(model, policy="delta", budget=budget, bandwidth=bandwidth)
    runner.plan_trace(trace)
    model.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    runner.step(step, m, z)
    seconds = time.perf_counter() - t0
    assert runner.last is not None
    return SweepRow(
        form="delta", residues=n, live_peak=None, held_peak=runner.last.meter.peak, seconds=seconds
    )
