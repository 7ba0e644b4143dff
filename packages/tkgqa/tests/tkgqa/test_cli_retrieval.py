"""`tkgqa eval --retrieval`: recall of an answer-bearing fact at n = 1, 3, 6, 10, and its option checks."""

from __future__ import annotations

import json

from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.cli import app


def _common(data_dir):
    return ["--data-dir", str(data_dir), "--encoder", "hash"]


def test_eval_retrieval_writes_recall_by_type_with_its_metadata(data_dir, tmp_path):
    out = tmp_path / "r.json"
    res = cli_ok(app, ["eval", "--retrieval", *_common(data_dir), "--out", str(out)])
    assert "an answer-bearing fact in the top n" in res.output.replace("\n", " ")
    got = json.loads(out.read_text())
    top = got["table"][0]
    assert got["retrieval_backend"] == "rules" and got["recall_at"] == [1, 3, 6, 10]
    assert top["n"] == got["n"] == len(got["rows"]) == 90  # the synthetic dev split
    assert (
        top["recall@1"] <= top["recall@3"] <= top["recall@6"] <= top["recall@10"] and top["recall@6"] >= 0.9
    )
    assert {r["value"] for r in got["table"] if r["group"] == "qtype"} == {
        "equal", "before_after", "first_last", "equal_multi", "after_first", "before_last"}  # fmt: skip
    row = got["rows"][0]
    assert row["recall@10"] == (row["first_answer_rank"] is not None and row["first_answer_rank"] < 10)
    assert got["meta"]["command"].startswith("tkgqa eval ") and got["meta"]["command"].endswith("--retrieval")
    assert got["meta"]["index"] is None and got["meta"]["kg"]["facts"] == 1500


def test_eval_retrieval_csv_and_sample(data_dir, tmp_path):
    cli_ok(
        app,
        [
            "eval",
            "--retrieval",
            "-n",
            "12",
            "--seed",
            "1",
            *_common(data_dir),
            "--out",
            str(tmp_path / "r.csv"),
        ],
    )
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("group,value,n,recall@1,recall@3,recall@6,recall@10") and lines[1].startswith(
        "all,all,12,"
    )


def test_eval_retrieval_refuses_options_that_do_not_apply(data_dir):
    for extra, match in (
        (["--policy", "openai"], "--policy does not apply to --retrieval"),
        (["--max-steps", "3"], "--max-steps does not apply to --retrieval"),
        (["--mode", "compat"], "--mode does not apply to --retrieval"),
        (["--no-compare"], "--compare does not apply to --retrieval"),
        (["--llm", "smollm2"], "--llm does not apply to --backend rules"),
        (["--backend", "llm", "--llm", "smollm2"], "--llm does not apply to --backend llm"),
        (
            ["--backend", "local", "--base-url", "http://x:1/v1"],
            "--base-url does not apply to --backend local",
        ),
        (["--backend", "gpt"], "--backend 'gpt' is not one of rules, llm, local"),
        (["--backend", "llm", "--base-url", "ftp://x"], "is not an http"),
        (["-n", "0"], "--limit must be >= 1"),
    ):
        cli_fails(app, ["eval", "--retrieval", *extra, *_common(data_dir)], match)
    cli_fails(app, ["eval", "--backend", "llm", *_common(data_dir)], "--backend applies to --retrieval")
