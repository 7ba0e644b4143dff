"""Evaluation: run a policy over questions, score both metrics, break down, compare with AT2QA per question."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tkgqa.agent import AgentResult, Policy, run_agent
from tkgqa.metrics import breakdown, lenient_correct, strict_correct
from tkgqa.questions import Question
from tkgqa.search import SearchTool

__all__ = ["BREAKDOWN_KEYS", "EvalReport", "evaluate", "reference_rows", "score_result"]

BREAKDOWN_KEYS = ("qtype", "qlabel", "answer_type", "time_level", "meta_source")


@dataclass(kw_only=True, slots=True)
class EvalReport:
    """Per-question rows, the breakdown table and the comparison with AT2QA's published results."""

    rows: list[dict[str, Any]]
    table: list[dict[str, Any]]
    comparison: dict[str, Any] = field(default_factory=dict)
    results: list[AgentResult] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return self.table[0] if self.table else {}


def score_result(q: Question, res: AgentResult) -> dict[str, Any]:
    """One row: both Hits@1 metrics, counters and the question's metadata.

    :func:`evaluate` adds the planner's ``abstained``, ``flagged`` (the abstention kind, or None),
    ``confidence`` and ``strict_abstaining`` (strict, and counted wrong when flagged: Hits@1 with abstention).

    A run that hit the step cap has no answer and scores 0, as in AT2QA; ``best_effort_strict`` says
    whether the last observation's guess would have been right (reported, never scored).
    """
    first = res.answers[0] if res.answers else ""
    guess = res.best_effort_answers[0] if res.best_effort_answers else ""
    return {
        "quid": q.quid, "question": q.question, "gold": q.answers, "pred": first,
        "strict": strict_correct(first, q.answers), "lenient": lenient_correct(res.final_text, q.answers),
        "tool_calls": res.tool_calls, "step_cap": res.hit_step_cap, "best_effort_pred": guess,
        "best_effort_strict": bool(guess) and strict_correct(guess, q.answers),
        "repairs": res.repairs, "tool_errors": res.tool_errors, "seconds": res.seconds,
        "qtype": q.qtype, "qlabel": q.qlabel, "answer_type": q.answer_type, "time_level": q.time_level,
        "meta_source": q.meta_source, "split": q.split,
    }  # fmt: skip


def _counters(sel: list[dict]) -> dict[str, Any]:
    n = max(len(sel), 1)
    return {
        "tool_calls": sum(r["tool_calls"] for r in sel) / n,
        "step_cap_hits": sum(bool(r["step_cap"]) for r in sel),
        "repairs": sum(r["repairs"] for r in sel),
    }


def _our_counters(sel: list[dict]) -> dict[str, Any]:
    # Step-cap runs score 0 (AT2QA's rule); how many of them the best-effort guess would get right.
    # The planner's abstentions: withheld answers, and questions flagged before any search (entity,
    # relation or time; "empty", no fact found, is not counted here).
    return {**_counters(sel), "best_effort_right": sum(bool(r["best_effort_strict"]) for r in sel),
            "abstained": sum(bool(r.get("abstained")) for r in sel),
            "flagged": sum(r.get("flagged") not in (None, "empty") for r in sel)}  # fmt: skip


def reference_rows(questions: Sequence[Question], reference: dict[int, dict]) -> list[dict[str, Any]]:
    """AT2QA's published predictions scored with *our* two metrics on the same questions.

    ``step_cap`` is a run without a final answer (``pred`` null): AT2QA's loop ends without one when
    its 20 assistant turns run out (a crashed run looks the same in the released traces).
    """
    out = []
    for q in questions:
        ref = reference.get(q.quid)
        if ref is None:
            continue
        pred = ref.get("pred") or ""
        out.append({
            "quid": q.quid, "strict": strict_correct(_first_item(pred), q.answers),
            "lenient": lenient_correct(f"<answer>{pred}</answer>" if pred else "", q.answers),
            "published_correct": bool(ref.get("correct")), "tool_calls": int(ref.get("n_tool_calls") or 0),
            "step_cap": ref.get("pred") is None, "repairs": 0,
            "qtype": q.qtype, "qlabel": q.qlabel, "answer_type": q.answer_type, "time_level": q.time_level,
            "meta_source": q.meta_source,
        })  # fmt: skip
    return out


def _first_item(pred: str) -> str:
    from tkgqa.metrics import split_answer_list

    items = split_answer_list(pred)
    return items[0] if items else pred


def evaluate(
    questions: Sequence[Question],
    policy_factory: Callable[[], Policy],
    tool: SearchTool,
    *,
    max_steps: int = 20,
    reference: dict[int, dict] | None = None,
    progress: Callable[[int, int], None] | None = None,
    keep_results: bool = True,
) -> EvalReport:
    """Run every question through a fresh policy, score it, and build the breakdown (and comparison)."""
    rows, results = [], []
    policy = policy_factory()
    for i, q in enumerate(questions):
        res = run_agent(q.question, policy, tool, quid=q.quid, max_steps=max_steps)
        extra = getattr(policy, "last", None)
        row = score_result(q, res)
        if extra is not None:  # the planner: its form, notes, abstention and confidence
            why = extra.abstention
            res.extra = {"form": extra.qtype, "notes": extra.notes, "abstained": extra.abstained,
                         "abstention": None if why is None else {"kind": why.kind, "reason": why.reason},
                         "confidence": extra.confidence}  # fmt: skip
            row.update(abstained=extra.abstained, flagged=None if why is None else why.kind,
                       confidence=extra.confidence, strict_abstaining=row["strict"] and why is None)  # fmt: skip
        rows.append(row)
        if keep_results:
            results.append(res)
        if progress:
            progress(i + 1, len(questions))
    table = breakdown(rows, BREAKDOWN_KEYS, ("strict", "lenient", "strict_abstaining"), extra=_our_counters)
    comparison: dict[str, Any] = {}
    if reference:
        ref = reference_rows(questions, reference)
        ours = {r["quid"]: r for r in rows}
        both = [(ours[r["quid"]], r) for r in ref if r["quid"] in ours]
        for o, r in both:  # question by question, same rules on both sides
            o["at2qa_strict"], o["at2qa_lenient"], o["at2qa_tool_calls"] = (
                r["strict"],
                r["lenient"],
                r["tool_calls"],
            )
            o["at2qa_pred"] = (reference.get(o["quid"]) or {}).get("pred")
        comparison = {
            "n": len(both),
            "at2qa_table": breakdown(
                ref, BREAKDOWN_KEYS, ("strict", "lenient", "published_correct"), extra=_counters
            ),
            "only_ours_strict": sum(o["strict"] and not r["strict"] for o, r in both),
            "only_at2qa_strict": sum(r["strict"] and not o["strict"] for o, r in both),
            "both_strict": sum(o["strict"] and r["strict"] for o, r in both),
            "neither_strict": sum(not o["strict"] and not r["strict"] for o, r in both),
        }
    return EvalReport(rows=rows, table=table, comparison=comparison, results=results)
