"""Where a TFDMNet's time goes, block by block: ``effcore.profiling``'s module profiler on named pieces.

Every block of :class:`tfdmnet.models.TFDMNet` is one row, and so is the core operation inside it
(the ``Conv2d`` of a spatial block, the ``EML`` of a frequency block); a frequency block's other
children (two-branch BN, nonlinearity, dropout) get their own rows when they run one by one. Each row
carries a category, so a table can add up the transitions into and out of the frequency domain, the
pooling, the complex BN, the nonlinearity, the dropout and the mixing.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import nn

from effcore.profiling import profile_modules
from tfdmnet.layers import (
    EML,
    FreqBatchNorm,
    FreqDropout,
    FreqLeakyReLU,
    FreqMaxPool,
    FreqSpatialReLU,
    ToFreq,
    ToSpatial,
)
from tfdmnet.models import TFDMNet

__all__ = ["CATEGORIES", "block_rows", "category_totals", "profile_network"]

CATEGORIES: dict[type, str] = {
    nn.Conv2d: "conv2d",
    EML: "mixing (EML)",
    ToFreq: "fft in",
    ToSpatial: "ifft out",
    FreqMaxPool: "freq pool (ifft, max-pool, fft)",
    nn.MaxPool2d: "spatial pool",
    FreqBatchNorm: "complex BN",
    FreqLeakyReLU: "nonlinearity",
    FreqSpatialReLU: "nonlinearity",
    FreqDropout: "dropout",
}
"""The category of each profiled module type; a block's remainder (what its named children do not
cover: BN + ReLU + dropout of a conv block, a fused frequency tail) is ``"<kind> rest"``."""


def block_rows(model: TFDMNet) -> list[tuple[str, str]]:
    """``(module name, role)`` pairs to profile: each block, then its core op and its hookable children.

    Spatial blocks keep their ``BatchNorm2d`` and in-place ``ReLU`` unhooked: a full backward hook on
    the BN would make its output a view that the in-place ReLU may not modify.
    """
    rows: list[tuple[str, str]] = []
    for name, block in model.blocks.items():
        kind = model.block_info[name]["kind"]
        rows.append((f"blocks.{name}", "block"))
        if kind == "conv":
            rows.append((f"blocks.{name}.0", "child"))
        elif kind == "eml":
            rows += [(f"blocks.{name}.{child}", "child") for child, _ in block.named_children()]
    return rows


def _category(model: TFDMNet, name: str, role: str) -> str:
    if name == "other":
        return "other"
    if role == "block":
        kind = model.block_info[name.removeprefix("blocks.")]["kind"]
        return "head" if kind == "head" else CATEGORIES.get(type(model.get_submodule(name)), kind)
    return CATEGORIES[type(model.get_submodule(name))]


def profile_network(
    model: TFDMNet, x: torch.Tensor, *, train: bool, warmup: int = 2, repeats: int = 8
) -> list[dict[str, Any]]:
    """One row per profiled module, times in ms and FLOPs exclusive of the children profiled inside it.

    ``train=False``: eval mode, forward only under ``torch.inference_mode``. ``train=True``: a training
    step's forward and backward of the summed logits. A block's exclusive time is what its profiled
    children leave (for a conv block: BN, ReLU, dropout); leaf rows are exclusive as they stand.
    """
    pairs = block_rows(model)
    model.train(train)
    profiles = profile_modules(
        model, x, modules=[n for n, _ in pairs], warmup=warmup, repeats=repeats, backward=train
    )
    roles = dict(pairs)
    by_name = {p.name: p for p in profiles}
    rows = []
    for p in profiles:
        role = roles.get(p.name, "other")
        fwd, bwd, flops = p.forward_ns, p.backward_ns or 0, p.forward_flops
        if role == "block":
            kids = [by_name[n] for n, r in pairs if r == "child" and n.startswith(p.name + ".")]
            fwd -= sum(q.forward_ns for q in kids)
            bwd -= sum(q.backward_ns or 0 for q in kids)
            flops -= sum(q.forward_flops for q in kids)
        kind = model.block_info.get(p.name.split(".")[1], {}).get("kind") if p.name != "other" else None
        category = _category(model, p.name, role)
        if role == "block" and kind in ("conv", "eml"):
            category = f"{kind} rest"
        rows.append(
            {
                "module": p.name,
                "role": role,
                "category": category,
                "calls": p.calls,
                "forward_ms": round(fwd / 1e6, 3),
                "backward_ms": round(bwd / 1e6, 3) if train else None,
                "forward_flops": flops,
            }
        )
    return rows


def category_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Forward and backward ms per category, with each category's share of the whole step."""
    fwd: dict[str, float] = defaultdict(float)
    bwd: dict[str, float] = defaultdict(float)
    for r in rows:
        fwd[r["category"]] += r["forward_ms"]
        bwd[r["category"]] += r["backward_ms"] or 0.0
    total = sum(fwd.values()) + sum(bwd.values())
    return {
        c: {
            "forward_ms": round(fwd[c], 3),
            "backward_ms": round(bwd[c], 3),
            "share": round((fwd[c] + bwd[c]) / total, 4) if total else 0.0,
        }
        for c in sorted(fwd, key=lambda c: -(fwd[c] + bwd[c]))
    }
