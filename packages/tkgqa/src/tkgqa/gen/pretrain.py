"""Link-prediction pre-training of the temporal encoders: held-out split, training, time-aware filtered ranking."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from effcore.errors import ConfigError
from tkgqa.gen.gnn import GnnConfig, TemporalEncoder, edge_tensors
from tkgqa.store import TemporalKG

__all__ = [
    "CHECKPOINT_FORMAT",
    "LinkMetrics",
    "PretrainedEncoder",
    "evaluate_links",
    "filtered_ranks",
    "load_encoder",
    "pretrain",
    "save_encoder",
    "split_facts",
]

CHECKPOINT_FORMAT = "tkgqa-gen-encoder-1"


@dataclass(kw_only=True, slots=True)
class LinkMetrics:
    """Time-aware filtered ranking of held-out facts, both directions (tail and head queries)."""

    mrr: float
    hits1: float
    hits3: float
    hits10: float
    queries: int


@dataclass(kw_only=True, slots=True)
class PretrainedEncoder:
    """A trained encoder with what it needs to embed: the KG identity, its first day and training edges."""

    model: TemporalEncoder
    cfg: GnnConfig
    kg_digest: str
    kg_source: str
    day0: int
    train_rows: np.ndarray
    history: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def edges(self, kg: TemporalKG) -> dict[str, torch.Tensor]:
        return edge_tensors(kg, self.train_rows, self.day0)

    @torch.no_grad()
    def entity_table(self, kg: TemporalKG) -> torch.Tensor:
        """Every entity's embedding (after message passing for tgnn), detached, on CPU."""
        self.model.eval()
        return self.model.entities(self.edges(kg) if self.cfg.layers else None).cpu()


def split_facts(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random ``(train_rows, heldout_rows)``; held-out facts are never message-passing edges.

    Training rows are sorted; held-out rows stay in random order, so any prefix is a random sample.
    """
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, round(n * holdout))
    return np.sort(perm[k:]), perm[:k]


def filtered_ranks(scores: torch.Tensor, target: torch.Tensor, known: list[np.ndarray]) -> torch.Tensor:
    """Rank of ``target[i]`` in row ``i`` after removing the other true answers ``known[i]`` (filtered setting).

    Ties count half (the expected rank under random tie-breaking), so a constant scorer gets the random rank.
    """
    s = scores.clone()
    gold = s.gather(1, target[:, None])
    for i, other in enumerate(known):
        if len(other):
            s[i, torch.from_numpy(other)] = -torch.inf
    s.scatter_(1, target[:, None], gold)
    greater = (s > gold).sum(1).float()
    ties = (s == gold).sum(1).float() - 1
    return 1 + greater + ties / 2


def _queries(kg: TemporalKG, rows: np.ndarray, day0: int) -> tuple[torch.Tensor, ...]:
    """Tail queries and head queries (reverse relation) of the facts at ``rows``: head, rel, day, answer."""
    h, r, t = (kg.head[rows].astype(np.int64), kg.rel[rows].astype(np.int64), kg.tail[rows].astype(np.int64))
    d = (kg.day[rows] - day0).astype(np.int64)
    cat = np.concatenate
    return tuple(torch.from_numpy(a) for a in (cat([h, t]), cat([r, r + len(kg.relations)]), cat([d, d]),
                                                cat([t, h])))  # fmt: skip


def _answer_sets(kg: TemporalKG) -> dict[tuple[int, int, int], list[int]]:
    """Every true answer of each (entity, relation or reverse, day) query over the whole KG."""
    out: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    n_rel = len(kg.relations)
    for h, r, t, d in zip(kg.head.tolist(), kg.rel.tolist(), kg.tail.tolist(), kg.day.tolist(), strict=True):
        out[(h, r, d)].append(t)
        out[(t, r + n_rel, d)].append(h)
    return out


@torch.no_grad()
def evaluate_links(enc: PretrainedEncoder, kg: TemporalKG, rows: np.ndarray, *, device: torch.device,
                   batch: int = 256) -> LinkMetrics:  # fmt: skip
    """Filtered MRR and Hits@1/3/10 of the facts at ``rows`` (both directions), time-aware filtering."""
    enc.model.eval()
    x = enc.model.entities({k: v.to(device) for k, v in enc.edges(kg).items()} if enc.cfg.layers else None)
    head, rel, day, ans = _queries(kg, rows, enc.day0)
    truth = _answer_sets(kg)
    ranks = []
    for lo in range(0, len(head), batch):
        sl = slice(lo, lo + batch)
        scores = enc.model.query(x, head[sl].to(device), rel[sl].to(device), day[sl].to(device)).cpu()
        known = [np.asarray(truth[(h, r, d + enc.day0)], np.int64) for h, r, d in
                 zip(head[sl].tolist(), rel[sl].tolist(), day[sl].tolist(), strict=True)]  # fmt: skip
        ranks.append(filtered_ranks(scores, ans[sl], known))
    rk = torch.cat(ranks)
    return LinkMetrics(mrr=float((1 / rk).mean()), hits1=float((rk <= 1).float().mean()),
                       hits3=float((rk <= 3).float().mean()), hits10=float((rk <= 10).float().mean()),
                       queries=len(rk))  # fmt: skip


def pretrain(kg: TemporalKG, cfg: GnnConfig, *, device: torch.device, max_seconds: float | None = None,
             progress: Callable[[int, int, float], None] | None = None) -> PretrainedEncoder:  # fmt: skip
    """Train by 1-vs-all cross-entropy over tail and head queries of the training facts; ``max_seconds`` bounds it.

    The graph each step is every training fact (message passing over the full edge list, as R-GCN does).
    """
    if len(kg) < 20:
        raise ConfigError(f"the KG holds {len(kg)} facts; link prediction needs at least 20")
    torch.manual_seed(cfg.seed)
    day0 = int(kg.day.min())
    train_rows, _ = split_facts(len(kg), cfg.holdout, cfg.seed)
    model = TemporalEncoder(cfg, len(kg.entities), len(kg.relations)).to(device)
    enc = PretrainedEncoder(model=model, cfg=cfg, kg_digest=kg.digest, kg_source=kg.source, day0=day0,
                            train_rows=train_rows)  # fmt: skip
    edges = {k: v.to(device) for k, v in enc.edges(kg).items()} if cfg.layers else None
    head, rel, day, ans = (a.to(device) for a in _queries(kg, train_rows, day0))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps_per_epoch = -(-len(head) // cfg.batch)
    total, step, start = cfg.epochs * steps_per_epoch, 0, time.perf_counter()
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(head), generator=gen).to(device)
        run = 0.0
        for lo in range(0, len(head), cfg.batch):
            idx = order[lo : lo + cfg.batch]
            x = model.entities(edges)
            loss = F.cross_entropy(model.query(x, head[idx], rel[idx], day[idx]), ans[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            run += lv
            step += 1
            if progress:
                progress(step, total, lv)
            if max_seconds is not None and time.perf_counter() - start > max_seconds:
                break
        enc.history.append({"epoch": epoch + 1, "loss": run / max(1, lo // cfg.batch + 1), "steps": step,
                            "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    return enc


def save_encoder(enc: PretrainedEncoder, path: Path) -> None:
    """Write the encoder with the KG's fingerprint (digest), recipe, split and metrics; atomic."""
    payload = {"format": CHECKPOINT_FORMAT, "config": asdict(enc.cfg), "kg_digest": enc.kg_digest,
               "kg_source": enc.kg_source, "day0": enc.day0, "train_rows": torch.from_numpy(enc.train_rows),
               "n_ent": enc.model.ent.num_embeddings, "n_rel": enc.model.n_rel, "history": enc.history,
               "metrics": enc.metrics, "state": enc.model.state_dict()}  # fmt: skip
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_encoder(path: Path, kg: TemporalKG, *, device: torch.device | str = "cpu") -> PretrainedEncoder:
    """Load an encoder for ``kg``; a checkpoint of another KG (different digest) is a clear error."""
    if not Path(path).is_file():
        raise ConfigError(f"encoder checkpoint {path} does not exist",
                          hint="train one: tkgqa gen-pretrain --kg KG --out enc.pt")  # fmt: skip
    try:
        p = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ConfigError(f"{path} is not a tkgqa encoder checkpoint ({type(exc).__name__})",
                          hint="train one: tkgqa gen-pretrain --kg KG --out enc.pt") from None  # fmt: skip
    if not isinstance(p, dict) or p.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a tkgqa encoder checkpoint ({CHECKPOINT_FORMAT})",
                          hint="train one: tkgqa gen-pretrain --kg KG --out enc.pt")  # fmt: skip
    if p["kg_digest"] != kg.digest:
        raise ConfigError(
            f"encoder {path} was trained on another KG ({p['kg_source']}, digest {p['kg_digest'][:12]}), "
            f"not {kg.source} (digest {kg.digest[:12]})",
            hint=f"pretrain one on this KG: tkgqa gen-pretrain --kg {kg.source} --out enc.pt",
        )
    cfg = GnnConfig(**p["config"])
    model = TemporalEncoder(cfg, p["n_ent"], p["n_rel"]).to(device)
    model.load_state_dict(p["state"])
    model.eval()
    return PretrainedEncoder(model=model, cfg=cfg, kg_digest=p["kg_digest"], kg_source=p["kg_source"],
                             day0=int(p["day0"]), train_rows=p["train_rows"].numpy(), history=p["history"],
                             metrics=p["metrics"])  # fmt: skip
