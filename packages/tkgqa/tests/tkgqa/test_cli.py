"""The tkgqa CLI on the synthetic data dir: every command, JSON/CSV output, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from effcore.testing.cli import cli_fails, cli_ok
from tkgqa.cli import app


def _ok(args):
    return cli_ok(app, args)


def _fails(args, match, *, code=2):
    return cli_fails(app, args, match, code=code)


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
    _fails(
        ["eval", "--split", "train", "--data-dir", str(tmp_path)],
        "--split 'train' is not one of dev, test, all",
    )


def test_serve_llm_rejects_a_bad_port():
    _fails(["serve-llm", "--port", "70000"], "--port must be in 0..65535")


def _nowhere(tmp_path):
    # A data dir that does not exist: a check that ran after loading would report that instead.
    return ["--data-dir", str(tmp_path / "no-data")]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["search", "visit", "--sort", "newest"], "--sort 'newest' is not one of"),
        (["search", "visit", "--position", "front"], "--position applies to an entity filter"),
        (["search", "visit", "-e", "China", "--position", "top"], "--position 'top' is not one of"),
        (["search", "visit", "--start", "2012-13-01"], "invalid date '2012-13-01'"),
        (["search", "visit", "--start", "2012", "--end", "2011"], "empty date range"),
        (["search", "visit", "-k", "0"], "--top-k must be in 1..200"),
        (["search", "visit", "-k", "5", "--mode", "compat"], "compat mode always returns 10"),
        (["search", "visit", "--mode", "compat", "--sort", "newest"], "--sort 'newest' is not one of"),
        (["search", "visit", "--mode", "compat", "-e", "China"], "-e without --position filters nothing"),
        (
            ["search", "visit", "--mode", "compat", "--start", "2012"],
            "--start '2012': compat mode takes YYYY-MM-DD",
        ),
        (["search", "visit", "--mode", "strict"], "--mode 'strict' is not one of"),
        (["search", "   "], "the query is empty"),
        (["search", "visit", "--slice", "dev:x"], "are integers"),
        (["ask", ""], "the question is empty"),
        (["ask", "Who?", "--max-steps", "0"], "--max-steps must be >= 1"),
        (["eval", "--max-steps", "0"], "--max-steps must be >= 1"),
        (["eval", "-n", "0"], "--limit must be >= 1"),
        (["eval", "--seed", "3"], "--seed draws the -n sample"),
        (["eval", "--policy", "oracle"], "--policy 'oracle' is not one of"),
        (
            ["ask", "Who?", "--base-url", "http://127.0.0.1:8765/v1"],
            "--base-url does not apply to --policy planner",
        ),
        (["eval", "--zero-shot", "--timeout", "5"], "--timeout, --fewshot do not apply to --policy planner"),
        (["ask", "Who?", "-p", "openai", "--llm", "smollm2"], "--llm does not apply to --policy openai"),
        (
            ["ask", "Who?", "-p", "openai", "--base-url", "localhost:8765/v1"],
            "is not an http(s) URL with a host",
        ),
        (["ask", "Who?", "-p", "openai", "--base-url", "http://"], "is not an http(s) URL with a host"),
        (["eval", "-p", "openai", "--timeout", "-1"], "--timeout must be a positive number"),
        (["ask", "Who?", "-p", "local", "--timeout", "nan"], "--timeout must be a positive number"),
        (["eval", "-p", "openai", "--timeout", "inf"], "--timeout must be a positive number"),
        (["ask", " \t "], "the question is empty"),
        (["eval", "-p", "local", "--llm", "gpt-5"], "--llm 'gpt-5' is not one of smollm2, gemma3-270m"),
        (["index", "--encoder", "bert"], "--encoder 'bert' is not one of minilm, hash"),
        (["index", "--kg", "facts.tsv"], "neither 'multitq', 'icews14' nor an existing TSV file"),
    ],
)
def test_bad_options_fail_in_one_line_before_anything_loads(tmp_path, args, match):
    _fails([*args, *_nowhere(tmp_path)], match)


def test_a_bad_base_url_in_the_environment_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TKGQA_BASE_URL", "127.0.0.1:8765")
    _fails(["ask", "Who?", "-p", "openai", *_nowhere(tmp_path)], "$TKGQA_BASE_URL '127.0.0.1:8765' is not")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["eval", "--log", "{d}/run.json"], "--log {d}/run.json: unsupported extension '.json'"),
        (["eval", "--log", "{d}/dir.jsonl"], "is a directory"),
        (["eval", "--out", "{d}/table.txt"], "unsupported extension '.txt'"),
        (["ask", "Who?", "--out", "{d}/a.csv"], "unsupported extension '.csv'"),
        (["ask", "Who?", "--log", "{d}/f.jsonl/x.jsonl"], "is a file, not a folder"),
        (["search", "x", "--out", "{d}/dir.json"], "is a directory"),
        (["index", "--out", "{d}/i.parquet"], "unsupported extension"),
        (["replay", "{d}/r.jsonl", "--out", "{d}/r.txt"], "unsupported extension"),
    ],
)
def test_every_output_path_is_checked_when_the_command_line_is_parsed(tmp_path, args, match):
    (tmp_path / "f.jsonl").write_text("")
    (tmp_path / "dir.jsonl").mkdir()
    (tmp_path / "dir.json").mkdir()
    d = str(tmp_path)
    _fails([a.format(d=d) for a in args] + _nowhere(tmp_path), match.format(d=d))


def test_a_binary_or_empty_replay_log_is_one_line(tmp_path):
    log = tmp_path / "run.jsonl"
    log.write_bytes(bytes(range(256)))
    _fails(["replay", str(log), *_nowhere(tmp_path)], "is not UTF-8 text")
    log.write_text("\n")
    _fails(["replay", str(log), *_nowhere(tmp_path)], "holds no trajectories")


def test_serve_llm_checks_its_options_before_loading_a_model():
    _fails(["serve-llm", "--llm", "llama"], "--llm 'llama' is not one of smollm2, gemma3-270m")
    _fails(["serve-llm", "--max-new-tokens", "0"], "--max-new-tokens must be >= 1")


def test_eval_out_carries_its_own_metadata(data_dir, tmp_path):
    from effcore.io import sha256_file

    out = tmp_path / "e.json"
    _ok(["eval", "-n", "6", "--seed", "2", *_common(data_dir), "--out", str(out)])
    meta = json.loads(out.read_text())["meta"]
    from shlex import quote

    from effcore.assets import portable_path

    d, o = quote(portable_path(data_dir)), quote(portable_path(out))  # '$TMPDIR/...': no machine's folders
    assert d.startswith("'$") and o.startswith("'$")
    assert meta["command"] == f"tkgqa eval --limit 6 --encoder hash --data-dir {d} --seed 2 --out {o}"
    assert meta["kg"]["digest"] == sha256_file(data_dir / "multitq" / "kg_partial.tsv.gz")
    assert meta["kg"]["facts"] == 1500 and meta["index"]["encoder"] == "hash-512"
    assert meta["wall_seconds"] > 0 and meta["machine"]["threads"] == 1 and meta["machine"]["cpu"]
    assert len(json.loads(out.read_text())["rows"]) == 6
    _ok(["eval", "-n", "6", *_common(data_dir), "--no-rows", "--out", str(out)])
    assert "rows" not in json.loads(out.read_text()) and json.loads(out.read_text())["table"][0]["n"] == 6
    _fails(["eval", "--no-rows", *_common(data_dir)], "--rows/--no-rows shape the --out JSON file")


def test_ctrl_c_during_an_index_build_keeps_the_chunks_and_the_rerun_resumes(data_dir, tmp_path, monkeypatch):
    from tkgqa.embed import HashEncoder

    encode, calls = HashEncoder.encode, []

    def interrupt_after_one_chunk(self, texts, **kwargs):
        if len(texts) > 1 and calls:  # fact chunks only (queries and relation names are short calls)
            raise KeyboardInterrupt
        calls.append(len(texts))
        return encode(self, texts, **kwargs)

    monkeypatch.setattr("tkgqa.index.CHUNK_FACTS", 400)
    monkeypatch.setattr(HashEncoder, "encode", interrupt_after_one_chunk)
    _fails(
        ["index", *_common(data_dir)],
        "interrupted: the finished chunks of the index build are kept",
        code=130,
    )
    monkeypatch.setattr(HashEncoder, "encode", encode)
    out = _ok(["index", *_common(data_dir), "--out", str(tmp_path / "i.json")]).output
    assert json.loads((tmp_path / "i.json").read_text())["resumed_chunks"] == 1 and "resumed_chunks" in out
