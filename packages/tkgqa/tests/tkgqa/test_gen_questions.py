"""Generated training questions: answers the KG supports, six qtypes, and the leak filter against held-out ones."""

from __future__ import annotations

import re

import pytest

from effcore.errors import ConfigError
from tkgqa.gen.leaks import LeakFilter, normalise_question
from tkgqa.gen.questions import generate_questions, relation_phrases
from tkgqa.names import kg_to_answer
from tkgqa.parse import parse_dates
from tkgqa.questions import QTYPES, Question
from tkgqa.synthetic import make_benchmark


@pytest.fixture(scope="module")
def generated(bench):
    return generate_questions(bench.store, 120, seed=1)


def test_every_qtype_is_generated_deterministically(bench, generated):
    assert {g.question.qtype for g in generated} == set(QTYPES)
    again = generate_questions(bench.store, 120, seed=1)
    assert [g.question.question for g in again] == [g.question.question for g in generated]


def test_generated_answers_are_supported_by_the_kg(bench, generated):
    kg = bench.store
    for g in generated:
        q, facts = g.question, kg.facts(g.rows)
        rels = {kg.relations.names[r] for _, r, _ in g.keys}
        assert facts and {f.relation for f in facts} <= rels, q.question
        if q.answer_type == "time":
            assert set(q.answers) == {f.date[:4] for f in facts}, q.question
            continue
        named = {kg_to_answer(x) for f in facts for x in (f.head, f.tail)}
        assert set(q.answers) <= named, q.question
        if q.qtype == "equal":  # recompute from the KG: every fact of (H, r) in the named period
            (h, r, (lo, hi)), = g.keys  # fmt: skip
            want = {kg_to_answer(kg.entities.names[t]) for t in kg.tail[kg.mask(heads=[h], relations=[r], start=lo,
                                                                                  end=hi)]}  # fmt: skip
            assert set(q.answers) == want, q.question
            (d,) = parse_dates(q.question)
            assert (d.start, d.end) == (lo, hi)


def test_relation_phrases_put_the_verb_in_the_past():
    assert relation_phrases("Make_a_visit") == ("visit", "visited")
    assert relation_phrases("Arrest,_detain,_or_charge_with_legal_action")[1].startswith("arrested, detain")
    assert relation_phrases("Make_statement") == ("make statement", "made statement")
    assert relation_phrases("Deny_responsibility")[1] == "denied responsibility"


def test_leak_filter_removes_planted_dev_questions(bench, generated):
    target = next(g for g in generated if g.question.qtype == "equal" and g.question.time_level == "day"
                  and g.question.answer_type == "entity")  # fmt: skip
    h, r, _ = target.keys[0]
    date = re.search(r" on (.+)\?$", target.question.question).group(1)
    H, base = kg_to_answer(bench.store.entities.names[h]), relation_phrases(bench.store.relations.names[r])[0]
    copy = Question(quid=1, question=target.question.question.upper().replace("?", " ?!"), answers=[])
    reworded = Question(quid=2, question=f"On {date}, which one did {H} {base}?", answers=[])
    unrelated = Question(quid=3, question="What is the capital of France?", answers=[])
    for planted, why in ((copy, "text"), (reworded, "key")):
        filt = LeakFilter(bench.store, [planted, unrelated])
        kept, report = filt.apply(generated)
        assert filt.leak(target) == why
        assert (
            target not in kept
            and report.kept == len(kept) == len(generated) - report.removed_text - report.removed_key
        )
        assert report.examples and report.held_out_questions == 2
    kept, report = LeakFilter(bench.store, [unrelated]).apply(generated)
    assert len(kept) == len(generated) and report.removed_key == report.removed_text == 0


def test_normalise_question_ignores_case_and_punctuation():
    assert normalise_question("Who  visited China, on 8 May 2013?") == normalise_question(
        "who visited china on 8 may 2013"
    )


def test_degenerate_requests_are_errors(bench):
    with pytest.raises(ConfigError, match=">= 1"):
        generate_questions(bench.store, 0)
    with pytest.raises(ConfigError, match="no \\(entity, relation\\) pair has 3 facts"):
        generate_questions(bench.store.subset([0, 1, 2], label="tiny"), 5)


def test_cli_gen_questions_writes_kept_questions_and_the_leak_report(data_dir, tmp_path):
    import json

    from effcore.testing.cli import cli_ok
    from tkgqa.cli import app
    from tkgqa.gen.questions import read_questions
    from tkgqa.loaders import load_multitq_kg

    out, qfile = tmp_path / "q.json", tmp_path / "q.jsonl"
    cli_ok(app, ["gen-questions", "--data-dir", str(data_dir), "-n", "60", "--out", str(out),
                 "--questions-out", str(qfile)])  # fmt: skip
    leaks = json.loads(out.read_text())["leaks"]
    assert leaks["held_out_questions"] == 120 and leaks["generated"] == 60
    back = read_questions(qfile, load_multitq_kg(data_dir))
    assert len(back) == leaks["kept"] == 60 - leaks["removed_text"] - leaks["removed_key"]
    assert all(g.rows for g in back)
    with pytest.raises(ConfigError, match="generated from another KG"):
        read_questions(qfile, make_benchmark(seed=5).store)


@pytest.mark.parametrize(
    "args,match",
    [(["-n", "0"], "-n must be >= 1"), (["--against", "train"], "--against 'train'"),
     (["--max-answers", "0"], "--max-answers"), (["--out", "q.csv"], "--out"), (["--questions-out", "q.json"], "--questions-out")],
)  # fmt: skip
def test_cli_gen_questions_bad_options(args, match):
    from effcore.testing.cli import cli_fails
    from tkgqa.cli import app

    cli_fails(app, ["gen-questions", *args], match)
