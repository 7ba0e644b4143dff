"""Profiling on a live process group: per-layer forward+backward time of each strategy per length.

Run on every rank of the group (``paradyse profile`` launches it under torchrun). Each timing is the
slowest rank's (the step waits for it), the median of ``repeats`` after ``warmup`` calls. Saved
activation bytes are measured too (``effcore.memory.track_activations``) and stored beside the
analytic figure, and one mixed plan per strategy pair estimates the cost of a switch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from effcore.errors import ConfigError
from effcore.memory import TensorTracker, track_activations
from paradyse.comm import rank_and_size
from paradyse.config import STRATEGIES, ModelConfig, check_sequence
from paradyse.costmodel import Profile, hardware_id
from paradyse.memory_model import activation_bytes
from paradyse.model import ParallelTransformer

__all__ = ["measure_step", "run_profile", "saved_bytes"]


def _max_over_ranks(value: float, group, device: torch.device) -> float:
    _, p = rank_and_size(group)
    if p == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return float(t.item())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_step(
    model: ParallelTransformer, plan, x: torch.Tensor, *, repeats: int = 3, warmup: int = 1, group=None
) -> tuple[float, float]:
    """(median, IQR) seconds of one forward + backward of ``plan`` on the local shard ``x``."""
    times = []
    for i in range(warmup + repeats):
        if group is not None or rank_and_size()[1] > 1:
            dist.barrier(group=group)
        _sync(x.device)
        t0 = time.perf_counter()
        y = model(x, plan)
        y.sum().backward()
        model.finish_grads()
        _sync(x.device)  # CUDA kernels run asynchronously: time them to completion
        elapsed = _max_over_ranks(time.perf_counter() - t0, group, x.device)
        for p in model.parameters():
            p.grad = None
        if i >= warmup:
            times.append(elapsed)
    times.sort()
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return statistics.median(times), q[2] - q[0]


def saved_bytes(model: ParallelTransformer, plan, x: torch.Tensor) -> int:
    """Bytes the forward of ``plan`` keeps for backward on this rank (measured)."""
    tracker = TensorTracker()
    with track_activations(tracker):
        y = model(x, plan)
    total = tracker.total()
    y.sum().backward()
    model.finish_grads()
    for p in model.parameters():
        p.grad = None
    return total


def run_profile(
    cfg: ModelConfig,
    seq_lens: Sequence[int],
    *,
    strategies: Sequence[str] = STRATEGIES,
    batch: int = 1,
    repeats: int = 3,
    warmup: int = 1,
    switch: bool = True,
    group=None,
    backend: str = "gloo",
    device_name: str | None = None,
    device: torch.device | None = None,
    on_point: Callable[[dict], None] | None = None,
) -> Profile:
    """Profile every strategy at every length on this group; every rank returns the same Profile.

    ``device``: where this rank's shards and activations live (default the CPU); ``backend`` and
    ``device_name`` name the hardware the profile is tied to."""
    device = torch.device("cpu") if device is None else device
    rank, p = rank_and_size(group)
    if repeats < 1 or warmup < 0:
        raise ConfigError(f"need repeats >= 1 and warmup >= 0, got {repeats} and {warmup}")
    for s in seq_lens:
        check_sequence(s, p, cfg)
    model = ParallelTransformer(cfg, group=group, device=device)
    points = []
    for s in seq_lens:
        gen = torch.Generator().manual_seed(s)
        x = torch.randn(batch, s, cfg.hidden, generator=gen, dtype=cfg.torch_dtype)
        # the stack's input requires grad in training (it is the embedding's output)
        local = x[:, rank * (s // p) : (rank + 1) * (s // p)].to(device).clone().requires_grad_(True)
        for k in strategies:
            med, iqr = measure_step(model, k, local, repeats=repeats, warmup=warmup, group=group)
            point = {
                "strategy": k, "seq_len": s, "layer_time_s": med / cfg.layers, "iqr_s": iqr / cfg.layers,
                "activation_bytes": saved_bytes(model, k, local) // cfg.layers,
                "activation_bytes_analytic": activation_bytes(cfg, k, s, p, batch=batch),
            }  # fmt: skip
            points.append(point)
            if on_point:
                on_point(point)
    switch_cost = _switch_cost(model, cfg, seq_lens, strategies, points, batch, repeats, warmup, group) if (
        switch and cfg.layers >= 2 and len(strategies) >= 2) else 0.0  # fmt: skip
    return Profile(hardware=hardware_id(backend, device_name), world_size=p, batch=batch, model=cfg,
                   points=points, switch_cost_s=switch_cost)  # fmt: skip


def _switch_cost(model, cfg, seq_lens, strategies, points, batch, repeats, warmup, group) -> float:
    # Time half-and-half plans at the middle length; the excess over the pure strategies' layer
    # times is what one boundary costs (clamped at 0: on CPU it is within noise).
    rank, p = rank_and_size(group)
    s = sorted(seq_lens)[len(seq_lens) // 2]
    x = torch.randn(batch, s, cfg.hidden, generator=torch.Generator().manual_seed(s), dtype=cfg.torch_dtype)
    local = (
        x[:, rank * (s // p) : (rank + 1) * (s // p)]
        .to(model.blocks[0].wq.device)
        .clone()
        .requires_grad_(True)
    )
    per_layer = {pt["strategy"]: pt["layer_time_s"] for pt in points if pt["seq_len"] == s}
    half = cfg.layers // 2
    excess = []
    for a in strategies:
        for b in strategies:
            if a == b:
                continue
            plan = [a] * half + [b] * (cfg.layers - half)
            med, _ = measure_step(model, plan, local, repeats=repeats, warmup=warmup, group=group)
            excess.append(med - half * per_layer[a] - (cfg.layers - half) * per_layer[b])
    return max(0.0, statistics.median(excess))
