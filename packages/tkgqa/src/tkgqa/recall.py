"""Retrieval recall: how often a question's top-n subgraph holds a fact that carries a gold answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tkgqa.evaluate import BREAKDOWN_KEYS
from tkgqa.metrics import breakdown, strict_correct
from tkgqa.names import kg_to_answer
from tkgqa.questions import Question
from tkgqa.retrieval import Subgraph, SubgraphRetriever
from tkgqa.store import Fact

__all__ = ["RECALL_AT", "RecallReport", "answer_fact", "evaluate_retrieval"]

RECALL_AT = (1, 3, 6, 10)
"""Subgraph sizes the recall is reported at (GenTKGQA's best n is about 5-6)."""


def answer_fact(fact: Fact, q: Question, seeds: Sequence[str]) -> bool:
    """Does ``fact`` carry one of ``q``'s gold answers?

    Time answers: its date cut to the gold's granularity is one (the strict metric's rule). Entity answers:
    its head or tail, other than the question's own (seed) entities, is one. MultiTQ names no gold fact, so
    this is answer recall: it can credit a fact that holds the answer for another reason.
    """
    if q.answer_type == "time":
        return strict_correct(fact.date, q.answers)
    return any(e not in seeds and strict_correct(kg_to_answer(e), q.answers) for e in (fact.head, fact.tail))


@dataclass(kw_only=True, slots=True)
class RecallReport:
    """Per-question rows and the breakdown table (recall@n per qtype, answer type, granularity ...)."""

    rows: list[dict[str, Any]]
    table: list[dict[str, Any]]


def _row(q: Question, sub: Subgraph, ns: Sequence[int]) -> dict[str, Any]:
    first = next((i for i, f in enumerate(sub.facts) if answer_fact(f, q, sub.seeds)), None)
    row: dict[str, Any] = {
        "quid": q.quid, "question": q.question, "gold": q.answers, "first_answer_rank": first,
        "facts": len(sub.facts), "candidates": sub.candidates, "relations": [r for r, _ in sub.relations],
        "time_range": list(sub.time_range), "time_source": sub.time_source.split(" ")[0],
        "empty": not sub.facts, "notes": sub.notes,
        "flagged": sub.abstention.kind if sub.abstention is not None and sub.abstention.kind != "empty" else None,
        "qtype": q.qtype, "qlabel": q.qlabel, "answer_type": q.answer_type, "time_level": q.time_level,
        "meta_source": q.meta_source,
    }  # fmt: skip
    for n in ns:
        row[f"recall@{n}"] = first is not None and first < n
    return row


def _counters(sel: list[dict]) -> dict[str, Any]:
    n = max(len(sel), 1)
    return {
        "empty": sum(r["empty"] for r in sel),
        "flagged": sum(r["flagged"] is not None for r in sel),
        "facts": sum(r["facts"] for r in sel) / n,
        "candidates": sum(r["candidates"] for r in sel) / n,
    }


def evaluate_retrieval(questions: Sequence[Question], retriever: SubgraphRetriever, *,
                       ns: Sequence[int] = RECALL_AT,
                       progress: Callable[[int, int], None] | None = None) -> RecallReport:  # fmt: skip
    """Retrieve each question's top ``max(ns)`` facts once and score recall at every ``n`` of ``ns``.

    Build ``retriever`` with abstention off to measure retrieval itself: ``flagged`` then counts the
    questions it would abstain on (entity, relation or time), which are retrieved and scored anyway.
    """
    top = max(ns)
    rows = []
    for i, q in enumerate(questions):
        rows.append(_row(q, retriever.retrieve(q.question, top_n=top), ns))
        if progress:
            progress(i + 1, len(questions))
    table = breakdown(rows, BREAKDOWN_KEYS, [f"recall@{n}" for n in ns], extra=_counters)
    sources = Counter(r["time_source"] for r in rows)
    table[0]["time_sources"] = dict(sorted(sources.items()))
    return RecallReport(rows=rows, table=table)
