"""Questions and evaluation: labelled vs derived metadata, the reference scored by the same rules, per row."""

from __future__ import annotations

import json

import pytest

from effcore.errors import ConfigError
from tkgqa.evaluate import evaluate, reference_rows
from tkgqa.policies import PlannerPolicy
from tkgqa.questions import derive_meta, load_questions, load_reference


def test_labelled_questions_keep_official_metadata_the_rest_is_derived(data_dir, bench):
    qs = {q.quid: q for q in load_questions(data_dir, split="all")}
    first = bench.questions[0]
    assert qs[first.quid].meta_source == "labelled" and qs[first.quid].qtype == first.qtype
    derived = [q for q in qs.values() if q.meta_source == "derived"]
    assert derived and all(q.qlabel in ("Single", "Multiple") for q in derived)
    assert {q.split for q in load_questions(data_dir, split="test")} == {"test"}
    with pytest.raises(ConfigError):
        load_questions(data_dir, split="valid")


@pytest.mark.parametrize(
    ("text", "qtype"),
    [("Who visited China on 8 May 2013?", "equal"), ("Who praised Ethiopia before 2007?", "before_after"),
     ("When did Islam Karimov last praise Malaysia?", "first_last"),
     ("Who praised the UAE in the same month as Iran?", "equal_multi"),
     ("After Burundi, who was the first to speak negatively about Ethiopia?", "after_first"),
     ("Before Xi Jinping, who was the last country to praise Malaysia?", "before_last")],
)  # fmt: skip
def test_derived_qtypes_follow_the_templates(text, qtype):
    assert derive_meta(text, ["x"])["qtype"] == qtype


def test_reference_is_scored_with_our_rules_and_attached_per_question(data_dir, bench, planner, tool):
    qs = load_questions(data_dir, split="dev")
    ref = load_reference(data_dir)
    rows = reference_rows(qs, ref)
    for r in rows:
        pred = ref[r["quid"]]["pred"]
        assert r["strict"] == (pred in next(q.answers for q in qs if q.quid == r["quid"]))
    report = evaluate(qs[:12], lambda: PlannerPolicy(planner), tool, reference=ref)
    c = report.comparison
    assert (
        c["n"] == 12
        and c["both_strict"] + c["only_ours_strict"] + c["only_at2qa_strict"] + c["neither_strict"] == 12
    )
    assert all("at2qa_strict" in row and "at2qa_pred" in row for row in report.rows)


def test_at2qa_step_cap_is_a_run_without_a_final_answer_not_a_tool_call_count(bench):
    qs = bench.questions
    ref = {
        qs[0].quid: {"qid": qs[0].quid, "correct": True, "n_tool_calls": 24, "pred": qs[0].answers[0]},
        qs[1].quid: {"qid": qs[1].quid, "correct": False, "n_tool_calls": 12, "pred": None},
    }
    rows = {r["quid"]: r for r in reference_rows(qs[:2], ref)}
    # 24 calls in parallel turns and an answer: not capped; no answer after 12 calls: the 20-turn cap.
    assert not rows[qs[0].quid]["step_cap"] and rows[qs[0].quid]["strict"]
    assert rows[qs[1].quid]["step_cap"] and not rows[qs[1].quid]["lenient"]


def test_a_step_cap_run_scores_zero_and_its_best_effort_guess_is_reported_apart(bench, tool):
    q = next(q for q in bench.questions if q.qtype == "equal")

    class Searcher:  # searches with the question forever: every run ends at the cap
        name = "searcher"

        def start(self, question):
            return [{"role": "user", "content": question}]

        def next(self, messages):
            return {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "vector_search", "arguments": json.dumps({"query": q.question})}}]}  # fmt: skip

    report = evaluate([q], Searcher, tool, max_steps=2)
    row, overall = report.rows[0], report.table[0]
    assert row["step_cap"] and row["pred"] == "" and not row["strict"] and not row["lenient"]
    assert row["best_effort_pred"] and overall["step_cap_hits"] == 1
    assert overall["best_effort_right"] == int(row["best_effort_strict"])
