"""Whole networks against their CNN twins: inference and training-step time as ratios, in one run.

Each case builds a mixture preset twice, with the fused EML-block tail (``fused``, the default) and
with the reference layers one by one (``reference``), and its CNN twin (``twin``). Variants alternate
inside every round (their order rotates from round to round), so load that drifts over the run hits
all of them alike; each round gives a ratio ``twin time / variant time`` (above 1: faster than the
twin), and the result keeps the median and quartiles of those per-round ratios, for wall time and
for the process's CPU time (``time.process_time``: all threads, excluding time other jobs take from
us on a shared machine). A training step is forward, cross-entropy and backward on random labels;
at batch 1 only inference runs (BatchNorm has no batch statistics of one sample).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError
from tfdmnet.bench import quartiles
from tfdmnet.models import TFDMNet, build_model, get_preset
from tfdmnet.ops import network_table

__all__ = ["MODES", "VARIANTS", "NetCase", "compare_network"]

MODES = ("inference", "train")
VARIANTS = ("fused", "reference", "twin")


@dataclass(kw_only=True, slots=True, frozen=True)
class NetCase:
    """A preset at a width and a batch size (random input at the preset's image size)."""

    preset: str
    width: float = 1.0
    batch: int = 32

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ConfigError(f"batch must be >= 1, got {self.batch}")
        if not get_preset(self.preset, width=self.width).has_eml:
            raise ConfigError(
                f"{self.preset} has no EML to compare with a twin", hint="pick a mixture preset"
            )


def _call(model: TFDMNet, x: torch.Tensor, y: torch.Tensor, mode: str) -> Callable[[], None]:
    if mode == "inference":
        model.eval()

        def infer() -> None:
            with torch.inference_mode():
                model(x)

        return infer
    model.train()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step


def _summary(xs: list[float]) -> dict[str, float]:
    q1, med, q3 = quartiles(xs)
    return {"median": round(med, 4), "q1": round(q1, 4), "q3": round(q3, 4), "min": round(min(xs), 4)}


def compare_network(case: NetCase, *, rounds: int = 7, warmup: int = 2, seed: int = 0) -> dict[str, Any]:
    """Per-call ms (wall and CPU) of each variant, and the per-round ratios against the twin."""
    if rounds < 1 or warmup < 0:
        raise ConfigError(f"need rounds >= 1 and warmup >= 0, got rounds={rounds}, warmup={warmup}")
    torch.manual_seed(seed)
    mixture = build_model(case.preset, width=case.width)
    reference = build_model(mixture.cfg).set_fused(False)
    reference.load_state_dict(mixture.state_dict())
    models = {"fused": mixture, "reference": reference, "twin": build_model(mixture.cfg.cnn_twin())}
    cfg = mixture.cfg
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(case.batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=gen)
    y = torch.randint(0, cfg.num_classes, (case.batch,), generator=gen)
    macs = {v: network_table(m)[-1]["measured_macs"] for v, m in models.items() if v != "reference"}
    result: dict[str, Any] = {
        "preset": case.preset, "width": case.width, "batch": case.batch, "image_size": cfg.image_size,
        "spectrum": cfg.eml.spectrum, "twin": models["twin"].cfg.name,
        "macs_per_image": macs, "macs_ratio": round(macs["twin"] / macs["fused"], 3), "modes": {},
    }  # fmt: skip
    if case.batch == 1:  # BatchNorm cannot normalise one sample by batch statistics
        result["not_run"] = {"train": "batch 1: BatchNorm in training needs more than one value per channel"}
    for mode in MODES if case.batch > 1 else ("inference",):
        calls = {v: _call(m, x, y, mode) for v, m in models.items()}
        for fn in calls.values():
            for _ in range(warmup):
                fn()
        wall: dict[str, list[float]] = {v: [] for v in calls}
        cpu: dict[str, list[float]] = {v: [] for v in calls}
        for r in range(rounds):
            order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
            for v in order:
                t0, c0 = time.perf_counter(), time.process_time()
                calls[v]()
                wall[v].append((time.perf_counter() - t0) * 1e3)
                cpu[v].append((time.process_time() - c0) * 1e3)
        result["modes"][mode] = {
            "ms": {v: {"wall": _summary(wall[v]), "cpu": _summary(cpu[v])} for v in calls},
            "vs_twin": {
                v: {
                    "wall": _summary([t / s for t, s in zip(wall["twin"], wall[v], strict=True)]),
                    "cpu": _summary([t / s for t, s in zip(cpu["twin"], cpu[v], strict=True)]),
                }
                for v in ("fused", "reference")
            },
        }
    return result
