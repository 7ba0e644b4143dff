"""Temporal KG encoders for link prediction: a relational message-passing GNN and a DistMult-with-time baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from effcore.errors import ConfigError
from tkgqa.store import TemporalKG

__all__ = ["ENCODERS", "GnnConfig", "TemporalEncoder", "TimeEncoding", "edge_tensors"]

ENCODERS = ("tgnn", "distmult")
"""tgnn: entity embeddings refined by relational message passing whose messages carry the fact's time;
distmult: the same entity, relation and time tables scored directly (DistMult with time, the baseline)."""


@dataclass(kw_only=True, slots=True)
class GnnConfig:
    """Encoder size and training recipe (validated here, before any data loads)."""

    encoder: str = "tgnn"
    dim: int = 64
    layers: int = 1
    epochs: int = 4
    batch: int = 4096
    lr: float = 5e-3
    holdout: float = 0.05
    eval_facts: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder {self.encoder!r} is not one of {', '.join(ENCODERS)}")
        for name, lo in (("dim", 2), ("epochs", 1), ("batch", 1), ("eval_facts", 1)):
            if getattr(self, name) < lo:
                raise ConfigError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        if self.dim % 2:
            raise ConfigError(f"dim must be even (sine and cosine halves), got {self.dim}")
        allowed = range(0, 1) if self.encoder == "distmult" else range(1, 4)
        if self.layers not in allowed:
            raise ConfigError(
                f"layers must be in {allowed.start}..{allowed.stop - 1} for {self.encoder}, got {self.layers}"
            )
        if not 0.0 < self.holdout < 0.5:
            raise ConfigError(f"holdout must be in (0, 0.5), got {self.holdout}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


class TimeEncoding(nn.Module):
    """A day (since the KG's first day) to a ``dim`` vector: fixed sinusoids (periods 1 day..~30 years)
    then a learned linear map, so days the training never saw (another window) still get an embedding."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        periods = torch.logspace(0, math.log10(11_000), half)
        self.register_buffer("freq", 2 * math.pi / periods, persistent=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, days: torch.Tensor) -> torch.Tensor:
        angle = days.float()[:, None] * self.freq[None, :]
        return self.proj(torch.cat([angle.sin(), angle.cos()], dim=-1))


def edge_tensors(kg: TemporalKG, rows: np.ndarray, day0: int) -> dict[str, torch.Tensor]:
    """Message-passing edges of the facts at ``rows``, both directions (relation ``r + R`` is ``r`` reversed)."""
    n_rel = len(kg.relations)
    h, r, t = (torch.from_numpy(a[rows].astype(np.int64)) for a in (kg.head, kg.rel, kg.tail))
    d = torch.from_numpy((kg.day[rows] - day0).astype(np.int64))
    return {"src": torch.cat([h, t]), "dst": torch.cat([t, h]), "rel": torch.cat([r, r + n_rel]),
            "day": torch.cat([d, d])}  # fmt: skip


class _Layer(nn.Module):
    """One relational layer: message ``x_src * w_rel + time(day)``, mean over in-edges, residual update."""

    def __init__(self, dim: int, n_rel2: int) -> None:
        super().__init__()
        self.rel = nn.Embedding(n_rel2, dim)
        nn.init.normal_(
            self.rel.weight, 1.0, 0.1
        )  # near identity: messages start as the neighbour's embedding
        self.time = TimeEncoding(dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, e: dict[str, torch.Tensor], deg: torch.Tensor) -> torch.Tensor:
        days = self.time(
            torch.arange(int(e["day"].max()) + 1, device=x.device)
        )  # one row per day, not per edge
        msg = x[e["src"]] * self.rel(e["rel"]) + days[e["day"]]
        agg = torch.zeros_like(x).index_add_(0, e["dst"], msg) / deg[:, None]
        return x + torch.tanh(self.out(agg))


class TemporalEncoder(nn.Module):
    """Entity, relation (with reverses) and time embeddings; ``score`` is DistMult with a time-shifted relation.

    ``encoder="tgnn"`` passes the entity table through ``layers`` relational layers over the training
    edges before scoring (a CompGCN-style composition in plain torch: the graph is one static edge list,
    so torch-geometric's sparse machinery would add a dependency and no speed here).
    """

    def __init__(self, cfg: GnnConfig, n_ent: int, n_rel: int) -> None:
        super().__init__()
        self.cfg, self.n_rel = cfg, n_rel
        self.ent = nn.Embedding(n_ent, cfg.dim)
        self.rel = nn.Embedding(2 * n_rel, cfg.dim)
        nn.init.normal_(self.ent.weight, 0, 0.1)
        nn.init.normal_(self.rel.weight, 0, 0.1)
        self.time = TimeEncoding(cfg.dim)
        self.layers = nn.ModuleList(_Layer(cfg.dim, 2 * n_rel) for _ in range(cfg.layers))

    def entities(self, edges: dict[str, torch.Tensor] | None) -> torch.Tensor:
        """All entity embeddings, after message passing over ``edges`` (ignored by distmult)."""
        x = self.ent.weight
        if not self.layers:
            return x
        if edges is None:
            raise ConfigError("the tgnn encoder needs the training edges to embed entities")
        deg = (
            torch.zeros(x.shape[0], device=x.device)
            .index_add_(0, edges["dst"], torch.ones_like(edges["dst"], dtype=torch.float))
            .clamp_(min=1)
        )
        for layer in self.layers:
            x = layer(x, edges, deg)
        return x

    def query(
        self, x: torch.Tensor, head: torch.Tensor, rel: torch.Tensor, day: torch.Tensor
    ) -> torch.Tensor:
        """Scores ``[B, n_ent]`` of every tail for queries ``(head, rel, ?, day)`` given entity embeddings ``x``."""
        q = x[head] * (self.rel(rel) + self.time(day))
        return q @ x.T
