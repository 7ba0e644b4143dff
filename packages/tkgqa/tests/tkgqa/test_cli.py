"""The tkgqa CLI on the synthetic data dir: every command, JSON/CSV output, one-line errors with exit code 2."""

from __future__ import annotations

import json

from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.cli import app


def _ok(args):
    return cli_ok(app, args)


def _fails(args, match):
    return cli_fails(app, args, match)


def _common(data_dir):
    return ["--data-dir", str(data_dir), "--encoder", "hash"]


def test_help_lists_every_command_and_teaches():
    out = _ok(["--help"]).output
    for command in ("index", "search", "ask", "eval", "replay", "serve-llm"):
        assert command in out
    assert "compat" in _ok(["search", "--help"]).output


def test_index_then_search_with_filters(data_dir, tmp_path):
    out = _ok(["index", *_common(data_dir), "--out", str(tmp_path / "i.json")]).output
    assert "facts" in out and json.loads((tmp_path / "i.json").read_text())["facts"] == 1500
    out = _ok(["search", "praise", "-e", "china", "--position", "front", "--sort", "time_asc", "-k", "3",
               *_common(data_dir), "--out", str(tmp_path / "s.csv")]).output  # fmt: skip
    rows = (tmp_path / "s.csv").read_text().splitlines()
    assert rows[0].startswith("line,score,head") and len(rows) == 4
    assert all(r.split(",")[2] == "China" for r in rows[1:])


def test_ask_eval_and_replay_round_trip(data_dir, tmp_path, bench):
    q = next(q for q in bench.questions if q.qtype == "after_first")
    out = _ok(["ask", q.question, *_common(data_dir), "--log", str(tmp_path / "a.jsonl")]).output
    assert "answer:" in out and q.answers[0] in out
    _ok(
        [
            "eval",
            "--split",
            "dev",
            *_common(data_dir),
            "--log",
            str(tmp_path / "e.jsonl"),
            "--out",
            str(tmp_path / "e.json"),
        ]
    )
    payload = json.loads((tmp_path / "e.json").read_text())
    assert payload["n"] == 90 and payload["table"][0]["strict"] > 0.9
    assert payload["comparison"]["n"] == 90
    out = _ok(
        ["replay", str(tmp_path / "e.jsonl"), *_common(data_dir), "--out", str(tmp_path / "r.json")]
    ).output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert len(rows) == 90 and all(r["differ"] == 0 for r in rows)


def test_eval_table_as_csv_and_a_seeded_sample(data_dir, tmp_path):
    _ok(
        [
            "eval",
            "-n",
            "10",
            "--seed",
            "3",
            "--no-compare",
            *_common(data_dir),
            "--out",
            str(tmp_path / "t.csv"),
        ]
    )
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0].startswith("group,value,n,strict,lenient") and lines[1].startswith("all,all,10,")


def test_unknown_entity_suggests_close_names(data_dir):
    _fails(["search", "visit", "-e", "Chinna x", *_common(data_dir)], "did you mean 'China'")


def test_invalid_date_range_is_refused(data_dir):
    _fails(
        ["search", "visit", "--start", "2012-01-01", "--end", "2011-01-01", *_common(data_dir)],
        "empty date range",
    )


def test_unreachable_llm_server_is_one_line_with_the_url(data_dir):
    _fails(["ask", "Who visited China?", "--policy", "openai", "--base-url", "http://127.0.0.1:9/v1", "--timeout", "2",
            *_common(data_dir)], "cannot reach the LLM server at http://127.0.0.1:9/v1")  # fmt: skip


def test_missing_data_dir_and_bad_kg_file_fail_clearly(tmp_path):
    _fails(["search", "x", "--data-dir", str(tmp_path / "none"), "--encoder", "hash"], "does not exist")
    bad = tmp_path / "bad.tsv"
    bad.write_text("A\tR\n")
    _fails(["index", "--kg", str(bad), "--encoder", "hash"], "bad.tsv:1: expected 4")
    _fails(["eval", "--split", "train", "--data-dir", str(tmp_path)], "unknown split")


def test_serve_llm_rejects_a_bad_port():
    _fails(["serve-llm", "--port", "70000"], "--port must be in 0..65535")
