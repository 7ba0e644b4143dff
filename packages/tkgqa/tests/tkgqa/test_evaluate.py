"""Questions and evaluation: labelled vs derived metadata, the reference scored by the same rules, per row."""

from __future__ import annotations

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
