"""Abstention: unknown entities, relations and times give a reason; answers carry a confidence; the CLI shows both."""

from __future__ import annotations

import json

import pytest

from effcore.errors import ConfigError
from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.abstain import Abstention, AbstentionConfig, relation_phrase
from tkgqa.agent import run_agent
from tkgqa.cli import app
from tkgqa.embed import HashEncoder
from tkgqa.planner import Planner
from tkgqa.policies import PlannerPolicy
from tkgqa.relations import RelationScorer
from tkgqa.scope import load_scope_questions, scope_table
from tkgqa.store import kg_days


@pytest.fixture(scope="module")
def judge(bench):
    scorer = RelationScorer(bench.store.relations.names, HashEncoder())
    return Planner(bench.store.entities.names, scorer, kg_days=kg_days(bench.store))


@pytest.mark.parametrize(
    ("question", "kind", "reason"),
    [
        ("What is the capital of France?", "relation", "no relation in this KG matches 'capital'"),
        ("Who visited Wakanda on 8 May 2013?", "entity", "no entity matches 'Wakanda'"),
        ("Did Elon Musk visit China in 2010?", "entity", "no entity matches 'Elon Musk'"),
        (
            "Who visited China in 1998?",
            "time",
            "the question's time '1998' lies outside this KG's span (2005-01-01",
        ),
        ("Who criticised Japan after 2016?", "time", "'2016' lies outside"),
        (
            "How many days are there in a leap year?",
            "entity",
            "no entity of this KG is named in the question",
        ),
    ],
)
def test_out_of_scope_questions_get_a_reason(judge, question, kind, reason):
    got = judge.judge(question).abstention
    assert got is not None and got.kind == kind and reason in got.reason, got


def test_close_names_come_with_an_unknown_entity(judge):
    got = judge.judge("Who visited Kenyaland in 2010?").abstention
    assert got.kind == "entity" and "Kenya" in got.close_names and "close: Kenya" in got.reason


def test_in_scope_synthetic_questions_are_not_flagged(bench, judge):
    assert [q.question for q in bench.questions if judge.judge(q.question).abstention is not None] == []


def test_planner_withholds_the_answer_or_answers_anyway_when_off(bench, tool):
    scorer = RelationScorer(bench.store.relations.names, HashEncoder())
    for enabled in (True, False):
        planner = Planner(bench.store.entities.names, scorer, kg_days=kg_days(bench.store),
                          abstention=AbstentionConfig(enabled=enabled))  # fmt: skip
        policy = PlannerPolicy(planner)
        res = run_agent("What is the capital of France?", policy, tool)
        o = policy.last
        assert o.abstention.kind == "relation" and o.abstained == enabled and o.confidence == 0.0
        assert (res.tool_calls == 0) == enabled and bool(o.answers) != enabled


def test_answers_carry_a_confidence_and_unanswerable_ones_an_empty_abstention(bench, tool, judge):
    q = bench.questions[0]
    policy = PlannerPolicy(judge)
    run_agent(q.question, policy, tool)
    assert policy.last.abstention is None and 0.0 < policy.last.confidence <= 1.0
    run_agent("Who threatened Hana Sato on 5 October 2006?", policy, tool)  # no such fact that day
    assert policy.last.abstained and policy.last.abstention.kind == "empty" and policy.last.confidence == 0.0


def test_the_relation_threshold_is_the_encoder_s_calibrated_one_or_none():
    assert AbstentionConfig().for_encoder("all-MiniLM-L6-v2@64").min_relation_score == 0.35
    assert AbstentionConfig().for_encoder("hash-512").min_relation_score == 0.2
    assert AbstentionConfig().for_encoder("some-encoder").min_relation_score is None
    assert AbstentionConfig(min_relation_score=0.5).for_encoder("hash-512").min_relation_score == 0.5


def test_relation_phrase_and_config_checks():
    assert relation_phrase("what is the capital of") == "capital"
    assert relation_phrase("who was the first to sign an agreement with zzdate") == "sign an agreement"
    with pytest.raises(ConfigError, match="min_relation_score"):
        AbstentionConfig(min_relation_score=5.0)
    with pytest.raises(ValueError, match="unknown abstention kind"):
        Abstention("x", "mood")


def test_bundled_out_of_scope_set_has_four_categories_of_sixteen():
    qs = load_scope_questions()
    assert len(qs) == 64 and len({q.question for q in qs}) == 64
    table = scope_table([{"category": q.category, "abstained": True, "kind": "entity"} for q in qs])
    assert {r["category"]: r["n"] for r in table} == {
        "all": 64,
        "trivia": 16,
        "relation": 16,
        "entity": 16,
        "time": 16,
    }


def _common(data_dir):
    return ["--data-dir", str(data_dir), "--encoder", "hash"]


def _text(result) -> str:
    return " ".join(result.output.split())  # the console wraps long lines


def test_ask_shows_the_reason_and_the_confidence(data_dir, tmp_path):
    out = _text(cli_ok(app, ["ask", "Who visited Wakanda on 8 May 2013?", *_common(data_dir)]))
    assert "abstains: no entity matches 'Wakanda'" in out and "confidence: 0.00" in out
    res = tmp_path / "a.json"
    out = cli_ok(
        app, ["ask", "What is the capital of France?", "--no-abstain", *_common(data_dir), "--out", str(res)]
    )
    assert "would abstain: no relation in this KG matches 'capital'" in _text(out)
    assert json.loads(res.read_text())["extra"]["abstention"]["kind"] == "relation"
    cli_fails(
        app, ["ask", "Who?", "-p", "openai", "--no-abstain", *_common(data_dir)], "--abstain does not apply"
    )


def test_eval_reports_hits_with_and_without_abstention(data_dir, tmp_path):
    out = tmp_path / "e.json"
    cli_ok(app, ["eval", "-n", "12", "--no-abstain", "--no-compare", *_common(data_dir), "--out", str(out)])
    top = json.loads(out.read_text())["table"][0]
    assert top["abstained"] == 0 and top["strict_abstaining"] <= top["strict"] and "flagged" in top


def test_abstention_command_rates_by_category(data_dir, tmp_path):
    qfile = tmp_path / "oos.jsonl"
    qfile.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Who visited Wakanda on 8 May 2013?", "category": "entity"},
        {"question": "Who criticised France in 2019?", "category": "time"},
        {"question": "What is the capital of France?", "category": "relation"},
    ]))  # fmt: skip
    out = tmp_path / "s.json"
    cli_ok(app, ["abstention", "--questions", str(qfile), *_common(data_dir), "--out", str(out)])
    got = json.loads(out.read_text())
    assert got["table"][0] == {
        "category": "all",
        "n": 3,
        "abstained": 3,
        "rate": 1.0,
        "kinds": "entity 1, relation 1, time 1",
    }
    assert got["meta"]["kg"]["facts"] == 1500
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Who?"}\n')
    cli_fails(
        app,
        ["abstention", "--questions", str(bad), *_common(data_dir)],
        "bad.jsonl:1: not a JSON object with",
    )


def test_retrieve_shows_a_subgraph_and_fails_in_one_line_when_it_is_empty(data_dir, bench, tmp_path):
    q = bench.questions[4].question  # after_first
    out = cli_ok(app, ["retrieve", q, *_common(data_dir), "--top-n", "3", "--out", str(tmp_path / "r.json")])
    got = json.loads((tmp_path / "r.json").read_text())
    assert len(got["facts"]) == 3 and got["time_source"].startswith("after ") and "confidence:" in _text(out)
    cli_fails(app, ["retrieve", "Who visited Wakanda on 8 May 2013?", *_common(data_dir)],
              "the subgraph is empty: no entity matches 'Wakanda'")  # fmt: skip
    cli_fails(app, ["retrieve", "Who threatened Hana Sato on 5 October 2006?", *_common(data_dir)],
              "the subgraph is empty")  # fmt: skip
    cli_fails(app, ["retrieve", " ", *_common(data_dir)], "the question is empty")
    cli_fails(app, ["retrieve", "Who?", "--top-n", "0", *_common(data_dir)], "top_n must be in 1..1000")
    cli_fails(
        app,
        ["retrieve", "Who?", "--llm", "smollm2", *_common(data_dir)],
        "--llm does not apply to --backend rules",
    )


def test_a_kg_without_timestamps_is_one_line(tmp_path):
    tsv = tmp_path / "facts.tsv"
    tsv.write_text("China\tMake_a_visit\tJapan\nJapan\tAccuse\tChina\n")
    for cmd in (["retrieve", "Who visited Japan?"], ["ask", "Who visited Japan?"]):
        cli_fails(app, [*cmd, "--kg", str(tsv), "--encoder", "hash"], "expected 4 tab-separated fields")
