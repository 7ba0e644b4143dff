"""tkgqa end to end on real MultiTQ with a real MiniLM index: the planner, both metrics, replay, SmolLM2 over HTTP.

The index is the whole KG's when `tkgqa index` has cached it (15-20 min on one thread), else the CI
slice's (`tkgqa index --slice dev`: the 40,000 facts about the entities of ~120 seeded dev questions),
which the `minilm_kg` fixture builds when it is missing (CI builds it first with the same command).
Only a missing data directory skips; a data directory without the MultiTQ or ICEWS14 files, or an
environment without the SmolLM2 wheel (the dev group's effcore[models]), fails.
"""

from __future__ import annotations

import json
import re

import pytest

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError
from effcore.testing.cli import cli_ok

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def multitq_root():
    try:
        return data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def minilm_kg(multitq_root):
    """KG options with a cached MiniLM index: none (the whole KG) when its index is cached, else the CI slice."""
    from tkgqa.cli import app
    from tkgqa.embed import MINILM_NAME
    from tkgqa.index import cached_index
    from tkgqa.loaders import load_multitq_kg
    from tkgqa.slices import CI_SLICE

    if cached_index(load_multitq_kg(multitq_root), MINILM_NAME) is not None:
        return []
    args = ["--slice", str(CI_SLICE)]
    cli_ok(app, ["index", *args, "--data-dir", str(multitq_root), "--threads", "2"])  # verifies, or builds
    return args


def test_planner_on_real_multitq_is_accurate_beats_at2qa_and_replays(multitq_root, minilm_kg, tmp_path):
    from tkgqa.cli import app

    out, log = tmp_path / "dev.json", tmp_path / "dev.jsonl"
    sample = [] if minilm_kg else ["--split", "dev", "-n", "150", "--seed", "1"]
    cli_ok(
        app,
        ["eval", *minilm_kg, *sample, "--data-dir", str(multitq_root), "--log", str(log), "--out", str(out)],
    )
    payload = json.loads(out.read_text())
    overall, at2qa = payload["table"][0], payload["comparison"]["at2qa_table"][0]
    assert payload["meta"]["index"]["encoder"] == "all-MiniLM-L6-v2@64" and payload["n"] >= 100
    # Measured (strict): CI slice 0.803 vs AT2QA's published answers 0.778 on its 117 questions (harder
    # than dev: busy entities); whole KG, these 150 dev questions: 0.953 vs 0.853. Both paths: above
    # 0.75, ahead of AT2QA on the same questions, under 2.5 calls per question.
    assert overall["strict"] > 0.75 and overall["strict"] > at2qa["strict"], (overall, at2qa)
    assert overall["lenient"] >= overall["strict"] and overall["tool_calls"] < 2.5
    assert overall["step_cap_hits"] == 0 and payload["comparison"]["n"] == payload["n"]
    cli_ok(
        app,
        ["replay", str(log), *minilm_kg, "--data-dir", str(multitq_root), "--out", str(tmp_path / "r.json")],
    )
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == payload["n"] and sum(r["calls"] for r in rows) >= payload["n"]
    assert all(r["differ"] == 0 for r in rows)


def test_at2qa_reference_rescored_matches_the_published_flags(multitq_root):
    from tkgqa.evaluate import reference_rows
    from tkgqa.questions import load_questions, load_reference

    qs = load_questions(multitq_root, split="dev")
    rows = reference_rows(qs, load_reference(multitq_root))
    agree = sum(r["lenient"] == r["published_correct"] for r in rows) / len(rows)
    # Our lenient rule is AT2QA's is_correct on the joined <answer> text: it reproduces their flags.
    assert agree > 0.995, agree


def test_the_parser_reads_the_answer_type_and_granularity_of_every_dev_question(multitq_root):
    from tkgqa.parse import parse_question
    from tkgqa.questions import load_questions

    wrong = []
    for q in load_questions(multitq_root, split="dev"):
        p = parse_question(q.question)
        level = {4: "year", 7: "month"}.get(len(q.answers[0]), "day") if q.answer_type == "time" else None
        if p.answer != q.answer_type or (level is not None and p.granularity != level):
            wrong.append((q.quid, q.question, p.answer, p.granularity, q.answers[0]))
    # The README's claim: 100% agreement on the 5,554 dev questions (gold answers give the truth).
    assert not wrong, wrong[:5]


def test_smollm2_runs_the_agent_loop_over_the_openai_compatible_server(multitq_root, minilm_kg):
    from tkgqa.agent import run_agent
    from tkgqa.prompt import system_prompt
    from tkgqa.runtime import open_runtime, policy_factory
    from tkgqa.slices import SliceSpec

    spec = SliceSpec.parse(minilm_kg[1]) if minilm_kg else None
    rt = open_runtime("multitq", slice_spec=spec, data_dir=multitq_root)
    question = rt.kg_slice.questions[0].question if rt.kg_slice else "Who visited China on 8 May 2013?"
    make, close = policy_factory("local", rt, llm="smollm2")
    try:
        res = run_agent(question, make(), rt.tool, max_steps=3)
    finally:
        close()
    # A 135M model is weak; what is checked is the path: AT2QA's prompt went out over HTTP, each turn
    # is one server reply, every observation is the tool's JSON, and the run ends as AT2QA's would.
    assert res.policy == "openai:smollm2" and res.messages[0]["content"] == system_prompt(fewshot=True)
    assert 1 <= res.steps <= 3 and sum(m["role"] == "assistant" for m in res.messages) == res.steps
    for m in res.messages:
        if m["role"] == "tool":
            obs = json.loads(m["content"])
            assert (
                "error" in obs
                if isinstance(obs, dict)
                else all({"line_no", "score", "text"} <= set(h) for h in obs)
            )
    last = [m for m in res.messages if m["role"] == "assistant"][-1]
    if res.hit_step_cap:  # AT2QA's "(no final answer)": nothing scored, whatever the last turn said
        assert res.steps == 3 and res.answers == [] and res.final_text == ""
    else:  # the run ended on a reply without tool calls, which is the final text
        assert not last.get("tool_calls") and res.final_text == last["content"] and res.answers


def test_tour_runs_the_planner_on_real_multitq_with_the_minilm_index(multitq_root, minilm_kg):
    from tkgqa.tour import demo

    rows = demo(quick=True)
    assert [r["step"] for r in rows] == [
        "planner on a synthetic MultiTQ",
        "planner on MultiTQ dev (kg_partial)",
    ]
    assert "strict Hits@1 1.000" in rows[0]["result"]
    assert "MultiTQ dev questions" in rows[1]["result"] and "all-MiniLM-L6-v2@64" in rows[1]["result"]
    assert "dev = 10% of MultiTQ's test questions" in rows[1]["result"]  # where the number is, what dev is
    strict = float(re.search(r"strict (\d\.\d+)", rows[1]["result"]).group(1))
    assert strict > 0.75, rows[1]  # as the eval test: CI slice 0.803, whole KG 0.95 on dev samples


def test_icews14_loads_every_split_as_2014_days(multitq_root):
    from tkgqa.loaders import load_icews14

    kg = load_icews14(multitq_root)
    assert (len(kg), len(kg.entities), len(kg.relations)) == (74_845 + 8_514 + 7_371, 7_128, 230)
    assert kg.date_range() == ("2014-01-01", "2014-12-31")
