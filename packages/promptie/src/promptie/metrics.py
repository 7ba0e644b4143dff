"""Micro P/R/F1 over tuples: entities, relations (strict and boundaries), event triggers and arguments.

Definitions (stated because papers mix them, DyGIE #5):

- entity: (start, end, type) exact;
- relation **strict**: type + both spans exact + both entity types; relation **boundaries**: type +
  both spans exact, entity types ignored;
- trigger **identification** (Trig-I): trigger span; **classification** (Trig-C): span + event type;
- argument **identification** (Arg-I): (event type, argument span); **classification** (Arg-C): +
  role. As in UIE's and DyGIE's tables, an argument counts when its event type is right; it is not
  tied to one trigger mention.

Tuples are sets per document (a duplicate prediction counts once) and counts are summed over
documents (micro average). Nested and overlapping spans are distinct tuples.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from promptie.data import Document

__all__ = ["METRICS", "PRF", "document_tuples", "score", "score_documents"]

METRICS = ("entity", "relation_strict", "relation_boundary", "trigger_id", "trigger_cls", "argument_id",
           "argument_cls")  # fmt: skip


@dataclass(frozen=True, slots=True)
class PRF:
    tp: int
    pred: int
    gold: int

    @property
    def precision(self) -> float:
        return self.tp / self.pred if self.pred else 0.0

    @property
    def recall(self) -> float:
        return self.tp / self.gold if self.gold else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __add__(self, other: PRF) -> PRF:
        return PRF(self.tp + other.tp, self.pred + other.pred, self.gold + other.gold)

    def to_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "tp": self.tp,
                "pred": self.pred, "gold": self.gold}  # fmt: skip


def score(pred: Iterable, gold: Iterable) -> PRF:
    """Counts for one document: sets of hashable tuples."""
    p, g = set(pred), set(gold)
    return PRF(len(p & g), len(p), len(g))


def document_tuples(doc: Document) -> dict[str, set]:
    """Every metric's tuples for one document (predicted or gold)."""
    out: dict[str, set] = {m: set() for m in METRICS}
    out["entity"] = {(e.start, e.end, e.type) for e in doc.entities}
    for r in doc.relations:
        h, t = r.head, r.tail
        out["relation_strict"].add((r.type, h.start, h.end, h.type, t.start, t.end, t.type))
        out["relation_boundary"].add((r.type, h.start, h.end, t.start, t.end))
    for ev in doc.events:
        for s in ev.triggers:
            out["trigger_id"].add((s.start, s.end))
            out["trigger_cls"].add((s.start, s.end, ev.type))
        for role, s in ev.arguments:
            out["argument_id"].add((ev.type, s.start, s.end))
            out["argument_cls"].add((ev.type, role, s.start, s.end))
    return out


def score_documents(pred: Sequence[Document], gold: Sequence[Document], *,
                    metrics: Sequence[str] = METRICS) -> dict[str, PRF]:  # fmt: skip
    """Micro counts over aligned prediction/gold document lists."""
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predictions for {len(gold)} gold documents")
    total = {m: PRF(0, 0, 0) for m in metrics}
    for p, g in zip(pred, gold, strict=True):
        pt, gt = document_tuples(p), document_tuples(g)
        for m in metrics:
            total[m] = total[m] + score(pt[m], gt[m])
    return total
