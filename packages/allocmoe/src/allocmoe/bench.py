"""Latency of budgeted inference: prefill and decode, budget against full budget on the same path.

Every configuration is timed in the same process, interleaved round by round (so drift of a noisy
machine hits all of them alike), after warm-up; we report the median and the inter-quartile range of
the per-round times and the ratio of medians. Decode time is per generated token with a KV cache.
"""

from __future__ import annotations

import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from allocmoe.budget import Policy
from allocmoe.runtime import apply_budget

__all__ = ["LatencyConfig", "against_ideal", "measure_latency"]


@dataclass(frozen=True, slots=True)
class LatencyConfig:
    """One timed configuration: a label, a policy (None: the model untouched) and an engine."""

    label: str
    policy: Policy | None
    engine: str = "allocmoe"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _one_round(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    device = ids.device
    _sync(device)
    t0 = time.perf_counter()
    out = model(input_ids=ids, use_cache=True)
    _sync(device)
    prefill = time.perf_counter() - t0
    # transformers >= 5.2x names the KV cache `cache` (`past_key_values` before, now deprecated)
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    cache = getattr(out, key)
    nxt = out.logits[:, -1:].argmax(-1)
    t1 = time.perf_counter()
    for _ in range(new_tokens):
        out = model(input_ids=nxt, use_cache=True, **{key: cache})
        cache = getattr(out, key)
        nxt = out.logits[:, -1:].argmax(-1)
    _sync(device)
    decode = (time.perf_counter() - t1) / max(1, new_tokens)
    return prefill, decode


def _summary(xs: list[float]) -> dict:
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0], xs[0], xs[0]]
    return {"median_ms": statistics.median(xs) * 1e3, "iqr_ms": (q[2] - q[0]) * 1e3}


def measure_latency(
    model: torch.nn.Module,
    configs: list[LatencyConfig],
    *,
    batch: int,
    prompt_len: int,
    new_tokens: int,
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Rows ``{label, batch, prefill_median_ms, prefill_iqr_ms, decode_..., unique_experts, ...}``.

    The first config is the reference of the ``*_speedup`` columns (reference median / this median).
    """
    device = next(model.parameters()).device
    vocab = model.config.get_text_config().vocab_size
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, prompt_len), generator=gen).to(device)
    times: dict[str, tuple[list[float], list[float]]] = {c.label: ([], []) for c in configs}
    unique: dict[str, float] = {}
    spent: dict[str, float] = {}
    total = (warmup + repeats) * len(configs)
    done = 0
    for r in range(warmup + repeats):
        for c in configs:
            handle = apply_budget(model, c.policy, engine=c.engine) if c.policy is not None else None
            try:
                p, d = _one_round(model, ids, new_tokens)
                if handle is not None and r == warmup + repeats - 1:
                    rows = handle.stats.rows()
                    unique[c.label] = sum(x["unique_experts_per_call"] for x in rows) / len(rows)
                    spent[c.label] = handle.stats.activations_per_token
            finally:
                if handle is not None:
                    handle.remove()
            if r >= warmup:
                times[c.label][0].append(p)
                times[c.label][1].append(d)
            done += 1
            if progress:
                progress(done, total)
    rows = []
    ref_p = statistics.median(times[configs[0].label][0])
    ref_d = statistics.median(times[configs[0].label][1])
    for c in configs:
        p, d = times[c.label]
        sp, sd = _summary(p), _summary(d)
        rows.append(
            {
                "config": c.label,
                "batch": batch,
                "prompt_len": prompt_len,
                "prefill_ms": sp["median_ms"],
                "prefill_iqr_ms": sp["iqr_ms"],
                "prefill_speedup": ref_p / statistics.median(p),
                "decode_ms_per_token": sd["median_ms"],
                "decode_iqr_ms": sd["iqr_ms"],
                "decode_speedup": ref_d / statistics.median(d),
                "activations_per_token": spent.get(c.label),
                "unique_experts_per_layer": unique.get(c.label),
            }
        )
    return rows


def against_ideal(rows: list[dict], *, full: str, ours: str, ideal: str) -> list[dict]:
    """Add, per batch, each row's speed-up over our full budget on the same path (``*_vs_full``) and,
    to the ``ours`` row, that speed-up as a fraction of the ``ideal`` row's (``*_of_ideal``).

    The ideal is the Uniform allocation of the same ``B`` (top-k/2 everywhere at half budget): the
    least routing work for that many activations, so a budgeted method's goal is a fraction near 1.
    """
    by_batch: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_batch.setdefault(r["batch"], {})[r["config"]] = r
    for group in by_batch.values():
        ref = group[full]
        for r in group.values():
            r["prefill_vs_full"] = ref["prefill_ms"] / r["prefill_ms"]
            r["decode_vs_full"] = ref["decode_ms_per_token"] / r["decode_ms_per_token"]
        for phase in ("prefill", "decode"):
            group[ours][f"{phase}_of_ideal"] = (
                group[ours][f"{phase}_vs_full"] / group[ideal][f"{phase}_vs_full"]
            )
    return rows
