"""Evaluation: the metrics over predicted documents, and relation decisions on gold entities (the judge
against the direct-generation baseline, with the false-positive rate on co-occurring unrelated pairs)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from promptie.data import Document, Relation
from promptie.extractor import Extractor
from promptie.metrics import METRICS, PRF, score, score_documents
from promptie.relations import candidates

__all__ = ["TUNE_METRICS", "evaluate", "pair_rates", "predict", "relation_decisions", "schema_metrics",
           "tune_null_margin"]  # fmt: skip

# what tune-null maximises: the mean F1 of these, over the ones the schema's tasks report
TUNE_METRICS = ("entity", "relation_strict", "trigger_cls", "argument_cls")

Progress = Callable[[str, int, int], None]


def predict(ex: Extractor, docs: Sequence[Document], *, progress: Progress | None = None) -> list[Document]:
    out = []
    for i, d in enumerate(docs):
        p = ex.extract(d.text)
        p.id = d.id
        out.append(p)
        if progress:
            progress("extract", i + 1, len(docs))
    return out


def pair_rates(schema, doc: Document, predicted: Sequence[Relation]) -> dict[str, int]:
    """Ordered pairs of gold mentions that fit some relation signature: related (a gold relation from
    head to tail) or unrelated; how many of each the prediction relates (any relation type)."""
    related = {((r.head.start, r.head.end), (r.tail.start, r.tail.end)) for r in doc.relations}
    pairs = {
        ((c.head.start, c.head.end), (c.tail.start, c.tail.end)) for c in candidates(schema, doc.entities)
    }
    said = {((r.head.start, r.head.end), (r.tail.start, r.tail.end)) for r in predicted}
    unrelated = pairs - related
    return {"unrelated": len(unrelated), "false_positive": len(unrelated & said),
            "related": len(related & pairs), "true_positive": len(related & pairs & said)}  # fmt: skip


def _strict(r: Relation) -> tuple:
    return (r.type, r.head.start, r.head.end, r.head.type, r.tail.start, r.tail.end, r.tail.type)


def _rates(counts: dict[str, int], prf: PRF) -> dict[str, Any]:
    return {**counts, **{f"strict_{k}": v for k, v in prf.to_dict().items()},
            "false_positive_rate": counts["false_positive"] / max(counts["unrelated"], 1),
            "true_positive_rate": counts["true_positive"] / max(counts["related"], 1)}  # fmt: skip


def relation_decisions(ex: Extractor, docs: Sequence[Document], *, methods: Sequence[str] = ("judge",),
                       progress: Progress | None = None) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Relations given the gold entities, per method (``judge``: filled prompts judged; ``direct``:
    the LM generates tails), scored strictly, with false- and true-positive rates over mention pairs."""
    out = {}
    for m in methods:
        counts = {"unrelated": 0, "false_positive": 0, "related": 0, "true_positive": 0}
        prf = PRF(0, 0, 0)
        for i, d in enumerate(docs):
            rels = (
                ex.judge_relations(d.text, d.entities)
                if m == "judge"
                else ex.direct_relations(d.text, d.entities)
            )
            for k, v in pair_rates(ex.schema, d, rels).items():
                counts[k] += v
            prf = prf + score(map(_strict, rels), map(_strict, d.relations))
            if progress:
                progress(f"relations ({m})", i + 1, len(docs))
        out[m] = _rates(counts, prf)
    return out


def evaluate(ex: Extractor, docs: Sequence[Document], *, relation_methods: Sequence[str] = (),
             progress: Progress | None = None) -> dict[str, Any]:  # fmt: skip
    """Metrics of the schema's tasks over ``docs`` (full extraction from text), plus relation
    decisions on gold entities for ``relation_methods``."""
    t0 = time.perf_counter()
    preds = predict(ex, docs, progress=progress)
    seconds = time.perf_counter() - t0
    scores = score_documents(preds, list(docs), metrics=schema_metrics(ex.schema))
    report: dict[str, Any] = {
        "metrics": {k: v.to_dict() for k, v in scores.items()},
        "documents": len(docs),
        "extract_seconds": seconds,
        "sentences_per_second": len(docs) / seconds if seconds else None,
    }
    if relation_methods and ex.schema.relations:
        report["relations_on_gold_entities"] = relation_decisions(
            ex, docs, methods=relation_methods, progress=progress
        )
    report["predictions"] = [_doc_json(p) for p in preds]
    return report


def schema_metrics(schema) -> list[str]:
    """The metrics a schema's tasks report (entities, relations, events)."""
    return [m for m in METRICS if (m.startswith("entity") and schema.entities)
            or (m.startswith("relation") and schema.relations)
            or (m.startswith(("trigger", "argument")) and schema.events)]  # fmt: skip


def tune_null_margin(ex: Extractor, docs: Sequence[Document], grid: Sequence[float], *,
                     progress: Progress | None = None) -> dict[str, Any]:  # fmt: skip
    """Every margin of ``grid`` on ``docs`` (all margins decoded in one batch per text): per-margin
    metrics and the mean F1 of ``TUNE_METRICS``; the best margin, ties to the smallest."""
    preds: list[list[Document]] = [[] for _ in grid]
    for i, d in enumerate(docs):
        for per_margin, p in zip(preds, ex.extract_margins(d.text, grid), strict=True):
            per_margin.append(p)
        if progress:
            progress("tune null margin", i + 1, len(docs))
    metrics = schema_metrics(ex.schema)
    chosen = [m for m in TUNE_METRICS if m in metrics]
    rows = []
    for margin, p in zip(grid, preds, strict=True):
        scores = score_documents(p, list(docs), metrics=metrics)
        rows.append({"null_margin": margin, "score": sum(scores[m].f1 for m in chosen) / len(chosen),
                     "metrics": {k: v.to_dict() for k, v in scores.items()}})  # fmt: skip
    best = max(rows, key=lambda r: (r["score"], -abs(r["null_margin"])))
    return {"null_margin": best["null_margin"], "score": best["score"], "score_metrics": chosen, "grid": rows}


def _doc_json(d: Document) -> dict[str, Any]:
    from promptie.output import document_json

    return document_json(d)
