"""GenTKGQA end to end: retrieve a subgraph, embed it, generate the answer; evaluation with the paper's ablations."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from effcore.errors import ConfigError
from tkgqa.gen.model import GenTKGQA, SubgraphFeatures, facts_text, instruction
from tkgqa.metrics import breakdown, lenient_correct, strict_correct
from tkgqa.questions import Question
from tkgqa.store import TemporalKG

__all__ = ["VARIANTS", "GenAnswer", "GenAnswerer", "evaluate_generator", "stage1_retriever"]

VARIANTS = ("full", "no_retrieval", "random_subgraph", "no_gnn", "no_time")
"""full: retrieved subgraph, text and knowledge tokens; no_retrieval: no facts and no tokens (the LM alone);
random_subgraph: as many random KG facts; no_gnn: the entity table before message passing; no_time: zero
time tokens. The ablations change inference only (the paper retrains some; see the README)."""


def stage1_retriever(
    kg: TemporalKG, encoder, *, facts: int = 6
) -> Callable[[str], tuple[list[int], list[str]]]:
    """Stage 1 (``tkgqa.retrieval``, rules back end) as ``question -> (rows, notes)``: never the gold facts."""
    from tkgqa.relations import RelationScorer
    from tkgqa.retrieval import RetrievalConfig, SubgraphRetriever

    retriever = SubgraphRetriever(
        kg, RelationScorer(kg.relations.names, encoder), config=RetrievalConfig(top_n=facts)
    )

    def retrieve(question: str) -> tuple[list[int], list[str]]:
        sub = retriever.retrieve(question)
        return sub.rows, sub.notes

    return retrieve


@dataclass(kw_only=True, slots=True)
class GenAnswer:
    """An answer (empty when abstaining), the facts shown, the retriever's notes and the seconds taken."""

    question: str
    answer: str
    rows: list[int]
    facts: list[str]
    abstained: bool = False
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


class GenAnswerer:
    """Answers questions with a trained generator over one KG; ``retrieve(question) -> (rows, notes)``."""

    def __init__(self, kg: TemporalKG, model: GenTKGQA, feats: SubgraphFeatures,
                 retrieve: Callable[[str], tuple[list[int], list[str]]], *, variant: str = "full", facts: int = 6,
                 seed: int = 0) -> None:  # fmt: skip
        if variant not in VARIANTS:
            raise ConfigError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
        self.kg, self.model, self.feats, self.retrieve = kg, model, feats, retrieve
        self.variant, self.facts, self.rng = variant, facts, random.Random(seed)

    def __call__(self, question: str) -> GenAnswer:
        t0 = time.perf_counter()
        if not question.strip():
            raise ConfigError("the question is empty", hint='ask e.g. "Who visited China on 8 May 2013?"')
        rows, notes = self.retrieve(question)
        if self.variant == "no_retrieval":
            rows = []
        elif self.variant == "random_subgraph":
            rows = self.rng.sample(range(len(self.kg)), self.facts)
        elif not rows:
            why = "; ".join(notes) or "no fact matched"
            return GenAnswer(question=question, answer="", rows=[], facts=[], abstained=True,
                             notes=[f"empty subgraph ({why}): no answer"], seconds=time.perf_counter() - t0)  # fmt: skip
        text = facts_text(self.kg, rows)
        feats = self.feats(rows) if rows else None
        out = self.model.answer(instruction(question, text or "(none)"), feats)
        return GenAnswer(question=question, answer=out, rows=list(rows), facts=text.splitlines() if text else [],
                         notes=notes, seconds=time.perf_counter() - t0)  # fmt: skip


def evaluate_generator(questions: Sequence[Question], answerer: GenAnswerer, *,
                       progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:  # fmt: skip
    """Strict and lenient Hits@1 per question and broken down by qtype, answer type and time level."""
    rows = []
    for i, q in enumerate(questions):
        a = answerer(q.question)
        first = a.answer.split(",")[0].strip() if a.answer else ""
        rows.append({"quid": q.quid, "question": q.question, "gold": q.answers, "pred": a.answer,
                     "strict": strict_correct(first, q.answers), "lenient": bool(a.answer) and
                     lenient_correct(a.answer, q.answers), "abstained": a.abstained, "facts": len(a.rows),
                     "seconds": round(a.seconds, 2), "qtype": q.qtype, "answer_type": q.answer_type,
                     "time_level": q.time_level, "meta_source": q.meta_source})  # fmt: skip
        if progress:
            progress(i + 1, len(questions))
    table = breakdown(
        rows, ("qtype", "answer_type", "time_level", "meta_source"), ("strict", "lenient", "abstained")
    )
    return {"table": table, "rows": rows}
