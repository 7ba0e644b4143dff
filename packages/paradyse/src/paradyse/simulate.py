"""Predict step time and memory on other hardware: per-layer FLOPs, bytes and collectives per strategy.

The time of one layer on one rank is ``flops / F + bytes / B + collectives * lat``: ``F`` the
sustained FLOP/s, ``B`` the sustained per-direction link bandwidth, ``lat`` the fixed cost of one
collective. :func:`calibrate` fits these three constants to a gloo profile (non-negative least
squares, shared by all strategies, so the work model itself is what is tested) and reports the
leave-one-out error; :func:`gpu_hardware` derives them from an ``effcore.device`` datasheet spec
and stated efficiencies. :func:`simulate` then plans every sequence of a length distribution with
each static strategy, the paper's heuristic and the adaptive planner.

Work per layer (``u = b s h``, ``e`` bytes per element, ``r = (p-1)/p``), forward + backward:

- FLOPs: 3x the forward (``2bsh(2h + 2h_kv) + 2bs^2h`` causal attention ``+ 4bshf``) split over ``p``
  ranks; METP adds a forward (recomputation); ring-style attention under a causal mask waits for its
  slowest rank, which does ``2 - 1/p`` times the average attention work (contiguous shards), or
  exactly the average (``ring_layout="zigzag"``, which moves q, k, v and the output: one
  all-to-all each, per pass).
- overlap (``ModelConfig.overlap``): the bytes sent while the layer computes (ZeRO-3's forward
  gathers but W1's: Q, K, V are prefetched during the previous layer, as if it were ZeRO-3 too, METP's broadcasts after each shard's first, every ring KV
  hop) cost ``max(compute, their transfer)`` instead of adding to it; without the flag every byte
  adds (the ring forward's overlap, always on in the code, is then not credited).
- bytes sent: megatron ``10 r u e``; ulysses four all-to-alls each way plus ZeRO-3's gather, re-gather
  and reduce-scatter of the layer's weights; ring ``~3 (p-1)`` KV blocks plus ZeRO-3; METP ``3x`` the
  weights broadcast and five passes of each shard's KV ring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from effcore.device import DeviceSpec, known_spec
from effcore.errors import ConfigError
from paradyse.config import STRATEGIES, ModelConfig, PlanError
from paradyse.costmodel import Profile, nnls_relative
from paradyse.planner import CostTable, HeuristicState, Planner, compress, paradyse_plan

__all__ = ["Hardware", "LayerWork", "calibrate", "gpu_hardware", "layer_work", "simulate"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Hardware:
    """Sustained rates of one rank: FLOP/s, link bytes/s (per direction), seconds per collective."""

    name: str
    flops: float
    bandwidth: float
    latency: float
    memory_bytes: int
    source: str = ""

    def layer_time(self, work: LayerWork) -> float:
        # overlapped bytes travel while the layer computes: they cost only what compute cannot hide
        exposed = (work.bytes - work.overlapped) / self.bandwidth
        busy = max(work.flops / self.flops, work.overlapped / self.bandwidth)
        return busy + exposed + work.collectives * self.latency


@dataclass(frozen=True, kw_only=True, slots=True)
class LayerWork:
    flops: float
    bytes: float
    collectives: int
    overlapped: float = 0.0  # of ``bytes``, those sent while the layer computes (ModelConfig.overlap)


def layer_work(cfg: ModelConfig, strategy: str, seq_len: int, p: int, *, batch: int = 1) -> LayerWork:
    """FLOPs, bytes sent and collectives of one layer's forward + backward on the slowest rank."""
    b, s, h, f = batch, seq_len, cfg.hidden, cfg.ffn
    kvd = cfg.kv_heads * cfg.head_dim
    e = cfg.dtype_bytes
    r = (p - 1) / p
    proj = 2 * b * s * h * (2 * h + 2 * kvd)
    attn = (2 if cfg.causal else 4) * b * s * s * h
    mlp = 4 * b * s * h * f
    passes = 4 if strategy == "metp" else 3  # METP recomputes each shard's forward
    ringed = strategy in ("ring", "metp") and cfg.causal and p > 1
    zigzag = ringed and cfg.ring_layout == "zigzag"
    imbalance = (2 - 1 / p) if (ringed and not zigzag) else 1.0
    flops = passes * (proj + mlp + attn * imbalance) / p
    weights = (cfg.params_per_layer - 2 * h) * e
    sl = s // p
    if strategy == "megatron":
        nbytes, colls = 10 * r * b * s * h * e, 10
    elif strategy == "ulysses":
        a2a = 2 * r * b * sl * (2 * h + 2 * kvd) * e
        nbytes, colls = a2a + 3 * r * weights, 8 + 18
    elif strategy == "ring":
        kv = 2 * b * sl * kvd * e
        nbytes, colls = (p - 1) * kv * 3 + kv + 3 * r * weights, 3 * (p - 1) + 1 + 18
    elif strategy == "metp":
        kv_shard = 2 * b * sl * (kvd // p) * e
        nbytes = 3 * r * weights + 5 * p * (p - 1) * kv_shard
        colls = 3 * 6 * p + 5 * p * (p - 1)
    else:
        raise ConfigError(f"unknown strategy {strategy!r}")
    hidden = 0.0
    if cfg.overlap and p > 1:  # what the overlapped path sends while it computes (paradyse.model)
        if strategy in ("ulysses", "ring"):  # forward gathers of Q, K, V (the previous layer's
            # prefetch), W3 and W2 (behind W1's projection)
            qkv = (cfg.heads + 2 * cfg.kv_heads) * cfg.head_dim * h
            hidden = r * (qkv + (cfg.ffn * h if cfg.mlp == "swiglu" else 0) + cfg.ffn * h) * e
        if strategy == "ring":  # every KV hop, forward and backward
            hidden += 2 * (p - 1) * 2 * b * sl * kvd * e
        if strategy == "metp":  # broadcasts after each shard's first, forward and recomputation
            hidden = 2 * r * (weights - (h * cfg.heads * cfg.head_dim + h * cfg.ffn) * e)  # all but Q's, W1's
    if zigzag:  # q, k, v to zigzag shards and the output back, and their gradients (METP: 3 passes)
        passes_moved = 2 if strategy == "ring" else 3
        nbytes += passes_moved * r * 2 * b * sl * (h + kvd) * e
        colls += passes_moved * 4 * (1 if strategy == "ring" else p)
    return LayerWork(flops=flops, bytes=nbytes if p > 1 else 0.0, collectives=colls if p > 1 else 0,
                     overlapped=min(hidden, nbytes) if p > 1 else 0.0)  # fmt: skip


class _HardwareTime:
    """A time model in the planner's interface: ``predict(seq_len)`` of one strategy on ``hw``."""

    def __init__(self, cfg: ModelConfig, strategy: str, p: int, hw: Hardware, batch: int) -> None:
        self.cfg, self.strategy, self.p, self.hw, self.batch = cfg, strategy, p, hw, batch

    def predict(self, seq_len: Any) -> float:
        return self.hw.layer_time(layer_work(self.cfg, self.strategy, int(seq_len), self.p, batch=self.batch))


def time_models(cfg: ModelConfig, p: int, hw: Hardware, *, batch: int = 1) -> dict[str, _HardwareTime]:
    return {k: _HardwareTime(cfg, k, p, hw, batch) for k in STRATEGIES}


def calibrate(profile: Profile) -> tuple[Hardware, dict[str, float]]:
    """Fit ``(F, B, lat)`` to a profile's per-layer times; returns the hardware and, per strategy, the
    mean |relative error| of leave-one-out predictions."""
    cfg, p, batch = profile.model, profile.world_size, profile.batch
    rows, ys, names = [], [], []
    for pt in profile.points:
        w = layer_work(cfg, pt["strategy"], pt["seq_len"], p, batch=batch)
        rows.append([w.flops, w.bytes, w.collectives])
        ys.append(pt["layer_time_s"])
        names.append(pt["strategy"])
    x, y = np.asarray(rows, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(y) < 4:
        raise ConfigError("calibration needs at least 4 profiled points")
    scale = np.where(x.max(axis=0) > 0, x.max(axis=0), 1.0)
    xs = x / scale
    errors: dict[str, list[float]] = {}
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        c = nnls_relative(xs[keep], y[keep])
        errors.setdefault(names[i], []).append(abs(float(xs[i] @ c) - y[i]) / y[i])
    c = nnls_relative(xs, y) / scale
    inv = [1.0 / v if v > 0 else math.inf for v in c[:2]]
    hw = Hardware(name=f"calibrated: {profile.hardware}", flops=inv[0], bandwidth=inv[1], latency=float(c[2]),
                  memory_bytes=0, source=f"fitted to {len(y)} profiled points")  # fmt: skip
    return hw, {k: float(np.mean(v)) for k, v in errors.items()}


def gpu_hardware(
    name: str, *, dtype: str = "bfloat16", compute_efficiency: float = 0.45, link_efficiency: float = 0.7,
    latency_s: float = 20e-6,
) -> Hardware:  # fmt: skip
    """An accelerator from its datasheet (``effcore.device.known_spec``) and stated efficiencies."""
    spec: DeviceSpec = known_spec(name)
    return Hardware(
        name=spec.name, flops=spec.flops(dtype) * compute_efficiency,
        bandwidth=spec.interconnect_bandwidth * link_efficiency, latency=latency_s,
        memory_bytes=spec.memory_bytes,
        source=f"{spec.source}; {compute_efficiency:.0%} of peak {dtype}, {link_efficiency:.0%} of the link, "
        f"{latency_s * 1e6:.0f} us per collective",
    )  # fmt: skip


def simulate(
    cfg: ModelConfig, p: int, hw: Hardware, seq_lens: Sequence[int], *, cap: int | None = None,
    margin: int = 512 * 2**20, hysteresis: float = 0.0, strict: bool = False, batch: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Every sequence under every static strategy, the paper's heuristic and our planner.

    Every method plans against ``cap - margin`` (``cap``: the hardware's memory unless given;
    ``margin``: kept free, the authors' 512 MiB by default); ``hysteresis`` and ``strict`` are our
    planner's (:class:`Planner`).
    Returns per-length rows and a summary per method: how many sequences it cannot fit (OOM), the
    longest it fits, its seconds over the sequences it fits and the adaptive plan's seconds over the
    same sequences (``speedup`` = method / adaptive on that common set). The adaptive summary also
    counts the sequences on which the adaptive plan is slower than the fastest static strategy that
    fits (``slower_than_best_static``), the largest and the mean such ratio
    (``worst_ratio_to_best_static``, ``mean_ratio_when_slower``) and the seconds lost on them
    (``seconds_over_best_static``): with ``hysteresis=0`` or ``strict`` never, since every static plan
    is one of the planner's candidates and a strict hysteresis keeps no plan slower than one.
    """
    cap = hw.memory_bytes if cap is None else cap
    if cap <= 0:
        raise ConfigError("the simulator needs a memory cap (hardware without memory: pass cap=...)")
    if not 0 <= margin < cap:
        raise ConfigError(f"the memory margin ({margin} bytes) must be >= 0 and below the cap ({cap} bytes)")
    limit = cap - margin
    models = time_models(cfg, p, hw, batch=batch)
    planner = Planner(cap=cap, margin=margin, layers=cfg.layers, hysteresis=hysteresis, strict=strict)
    heuristic = HeuristicState()
    rows: list[dict[str, Any]] = []
    methods = [*STRATEGIES, "paradyse", "adaptive"]
    summary = {
        m: {"seconds": 0.0, "adaptive_seconds": 0.0, "tokens": 0, "oom": 0, "longest": 0} for m in methods
    }
    slower: list[float] = []  # adaptive / best static, where above 1
    lost, worst = 0.0, 0.0
    for s in seq_lens:
        table = CostTable.build(cfg, p, int(s), models, batch=batch)
        tokens = int(s) * batch
        row: dict[str, Any] = {"seq_len": int(s)}
        for k in STRATEGIES:
            plan = (k,) * cfg.layers
            fits = table.memory(plan) <= limit
            row[f"{k}_s"] = table.seconds(plan) if fits else None
            _account(summary[k], fits, table.seconds(plan), tokens)
        chosen = paradyse_plan(table, cap, heuristic, batch=batch, margin=margin)
        fits = table.memory(chosen.layers) <= limit  # the sticky fallback may not fit
        row["paradyse_s"] = chosen.seconds if fits else None
        row["paradyse_plan"] = compress(chosen.layers) if fits else "OOM"
        _account(summary["paradyse"], fits, chosen.seconds, tokens)
        try:
            best = planner.plan(table)
            row["adaptive_s"], row["adaptive_plan"] = best.seconds, compress(best.layers)
            _account(summary["adaptive"], True, best.seconds, tokens)
        except PlanError:
            row["adaptive_s"], row["adaptive_plan"] = None, "OOM"
            _account(summary["adaptive"], False, 0.0, tokens)
        for k in [*STRATEGIES, "paradyse"]:
            if row[f"{k}_s"] is not None and row["adaptive_s"] is not None:
                summary[k]["adaptive_seconds"] += row["adaptive_s"]
        statics = [row[f"{k}_s"] for k in STRATEGIES if row[f"{k}_s"] is not None]
        if statics and row["adaptive_s"] is not None:
            ratio = row["adaptive_s"] / min(statics)
            worst = max(worst, ratio)
            if ratio > 1 + 1e-12:
                slower.append(ratio)
                lost += row["adaptive_s"] - min(statics)
        rows.append(row)
    for m in methods:
        sm = summary[m]
        sm["tokens_per_s"] = sm["tokens"] / sm["seconds"] if sm["seconds"] else 0.0
        if m != "adaptive":
            sm["speedup"] = sm["seconds"] / sm["adaptive_seconds"] if sm["adaptive_seconds"] else None
    summary["adaptive"].pop("adaptive_seconds")
    summary["adaptive"] |= {
        "slower_than_best_static": len(slower), "worst_ratio_to_best_static": worst,
        "mean_ratio_when_slower": sum(slower) / len(slower) if slower else 1.0, "seconds_over_best_static": lost,
    }  # fmt: skip
    return {"rows": rows, "summary": summary, "cap": cap, "margin": margin, "hysteresis": hysteresis, "strict": strict,
            "hardware": hw.name, "hardware_source": hw.source, "p": p, "model": cfg.name}  # fmt: skip


def _account(sm: dict[str, Any], fits: bool, seconds: float, tokens: int) -> None:
    if fits:
        sm["seconds"] += seconds
        sm["tokens"] += tokens
        sm["longest"] = max(sm["longest"], tokens)
    else:
        sm["oom"] += 1
