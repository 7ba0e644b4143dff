"""Expert-load preservation: how closely a budget keeps each layer's expert load of the full budget.

The Alloc-MoE paper compares, per MoE layer, the load (kept (token, expert) pairs per expert) under a
method against the load at the full budget with Spearman's rank correlation (1: the same ranking of
experts) and the Jensen-Shannon divergence of the two load distributions (0: the same shares). We
report both per layer and their means over layers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["LoadPreservation", "js_divergence", "load_preservation", "spearman"]


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks with ties given their average rank (as ``scipy.stats.rankdata``)."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    for v in torch.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float] | torch.Tensor, b: Sequence[float] | torch.Tensor) -> float:
    """Spearman's rank correlation of ``a`` and ``b`` (average ranks for ties); NaN if either is constant."""
    ra, rb = _ranks(torch.as_tensor(a)), _ranks(torch.as_tensor(b))
    if ra.numel() != rb.numel():
        raise ValueError(f"spearman needs equal lengths, got {ra.numel()} and {rb.numel()}")
    da, db = ra - ra.mean(), rb - rb.mean()
    denom = float(da.norm() * db.norm())
    return float((da * db).sum()) / denom if denom > 0 else math.nan


def js_divergence(p: Sequence[float] | torch.Tensor, q: Sequence[float] | torch.Tensor) -> float:
    """Jensen-Shannon divergence in bits (0..1) of two non-negative count vectors, each normalised."""
    p, q = torch.as_tensor(p).double(), torch.as_tensor(q).double()
    if p.numel() != q.numel():
        raise ValueError(f"js_divergence needs equal lengths, got {p.numel()} and {q.numel()}")
    if p.sum() <= 0 or q.sum() <= 0 or (p < 0).any() or (q < 0).any():
        raise ValueError("js_divergence needs non-negative counts with a positive sum")
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x: torch.Tensor) -> float:
        nz = x > 0  # 0 * log 0 = 0; m > 0 wherever x > 0
        return float((x[nz] * torch.log2(x[nz] / m[nz])).sum())

    return max(0.0, (kl(p) + kl(q)) / 2)


@dataclass(frozen=True, slots=True)
class LoadPreservation:
    """Per-layer Spearman and Jensen-Shannon of a method's expert load against the full budget's.

    ``spearman_mean`` skips layers where a load is constant (the correlation is undefined there).
    """

    spearman: tuple[float, ...]
    js: tuple[float, ...]

    @property
    def spearman_mean(self) -> float:
        vals = [v for v in self.spearman if not math.isnan(v)]
        return sum(vals) / len(vals) if vals else math.nan

    @property
    def js_mean(self) -> float:
        return sum(self.js) / len(self.js)


def load_preservation(
    reference: Sequence[Sequence[float] | torch.Tensor], loads: Sequence[Sequence[float] | torch.Tensor]
) -> LoadPreservation:
    """Compare per-layer expert loads ``loads[l][e]`` with the full budget's ``reference[l][e]``."""
    if len(reference) != len(loads):
        raise ValueError(f"{len(loads)} layers of loads against {len(reference)} of the reference")
    return LoadPreservation(
        tuple(spearman(r, x) for r, x in zip(reference, loads, strict=True)),
        tuple(js_divergence(r, x) for r, x in zip(reference, loads, strict=True)),
    )
