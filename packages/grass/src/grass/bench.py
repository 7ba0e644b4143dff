"""What the optimizer-state offload costs: GRASS steps with the state streamed layer by layer
against the same steps with the state kept on the device, side by side, repeated.

Both sides run the same model, data and active layers (one ``LayerwiseAdamW`` each, a fixed active
set), alternating step by step so that machine noise hits both; the ratio per pair is
``t_offload / t_resident``. On CPU the copies are synchronous (nothing to overlap with): the ratio
is the full cost of the copies. On CUDA the prefetch and write-back run on a side stream.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from grass.config import RunConfig
from grass.data import Batches, load_task
from grass.models import load_model, prepare

__all__ = ["OffloadBench", "bench_offload"]


@dataclass(frozen=True, slots=True)
class OffloadBench:
    """Median and min/max of the per-pair step-time ratio, and the median step times."""

    ratio_median: float
    ratio_min: float
    ratio_max: float
    offload_step_s: float
    resident_step_s: float
    transfer_share: float  # of the offloaded steps' time spent in the optimizer's transfer calls
    pairs: int
    device: str

    @property
    def overhead(self) -> float:
        return self.ratio_median - 1.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_offload(
    *,
    model: str = "smollm2",
    gamma: int = 2,
    batch: int = 2,
    seq_len: int = 128,
    pairs: int = 5,
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> OffloadBench:
    """Time ``pairs`` alternating steps of GRASS with ``offload="layerwise"`` and ``"none"``."""
    sides = {}
    for offload in ("layerwise", "none"):
        cfg = RunConfig(method="grass", model=model, gamma=gamma, batch=batch, seq_len=seq_len, offload=offload,
                        probe_steps=1, sample_period=10**6, update_period=10**6, train_limit=64)  # fmt: skip
        net, tok = load_model(model, device=device)
        prep = prepare(cfg, net)
        prep.tuner.optimizer.set_active(
            [f"layer{i}" for i in range(net.config.num_hidden_layers - gamma, net.config.num_hidden_layers)]
        )
        prep.tuner.probing = False
        data = Batches(
            load_task("gsm8k", "train", tok, seq_len=seq_len, limit=64),
            batch,
            seed=0,
            pad_id=tok.pad_token_id,
        )
        sides[offload] = (prep, data)

    def step(offload: str, i: int) -> float:
        prep, data = sides[offload]
        b = {k: v.to(device) for k, v in data.batch_at(i).items()}
        _sync(device)
        t0 = time.perf_counter()
        prep.model(**b).loss.backward()
        prep.optimizer.step()
        prep.optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - t0

    step("layerwise", 0)  # warm-up: first allocations and the first host buffers
    step("none", 0)
    sides["layerwise"][0].optimizer.stats.transfer_s = 0.0
    ratios, t_off, t_res = [], [], []
    for i in range(1, pairs + 1):
        a, b = step("layerwise", i), step("none", i)
        t_off.append(a)
        t_res.append(b)
        ratios.append(a / b)
        if progress:
            progress(i, pairs)
    transfer = sides["layerwise"][0].optimizer.stats.transfer_s
    return OffloadBench(
        ratio_median=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
        offload_step_s=statistics.median(t_off), resident_step_s=statistics.median(t_res),
        transfer_share=transfer / sum(t_off), pairs=pairs, device=str(device),
    )  # fmt: skip
