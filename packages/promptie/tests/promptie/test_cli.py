"""The promptie CLI on tiny models and synthetic data: every command, outputs, and each bad input as one
red line with exit code 2 and nothing written."""

from __future__ import annotations

import json

import pytest

from effcore.testing.cli import cli_fails, cli_ok
from promptie.cli import app


def test_help_lists_every_command():
    out = cli_ok(app, ["--help"]).output
    for cmd in ("prompts", "train", "eval", "tune-null", "extract"):
        assert cmd in out


def test_prompts_shows_both_modes_and_writes_csv(tmp_path):
    out = cli_ok(
        app, ["prompts", "--schema", "casie", "--mode", "composable", "--out", str(tmp_path / "p.csv")]
    ).output
    assert "Ransom" in out
    rows = (tmp_path / "p.csv").read_text().splitlines()
    assert rows[0] == "type,task,slots,prompt" and len(rows) == 6
    assert "statement" not in cli_ok(app, ["prompts", "--schema", "conll04", "--mode", "specific"]).output


def test_train_eval_extract_round_trip(run_dir, tmp_path, data_dir):
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["documents"] == 2 and len(summary["record"]["losses"]) == 2 and "command" in summary
    cli_ok(app, ["eval", str(run_dir), "--data-dir", str(data_dir), "--relations", "judge,direct",
                 "--out", str(tmp_path / "e.json")])  # fmt: skip
    report = json.loads((tmp_path / "e.json").read_text())
    assert set(report["metrics"]) == {"entity", "relation_strict", "relation_boundary"}
    assert set(report["relations_on_gold_entities"]) == {"judge", "direct"}
    assert report["eval_documents"] == 2 and report["wall_seconds"] >= 0
    res = cli_ok(app, ["extract", "John Smith works for Acme Corp in Boston .", "-c", str(run_dir),
                       "--out", str(tmp_path / "x.jsonl")])  # fmt: skip
    line = json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][-1])
    assert set(line) == {"id", "text", "entities", "relations", "events"}
    for e in line["entities"]:
        assert line["text"][e["start"] : e["end"]] == e["text"]
    (tmp_path / "in.txt").write_text("John Smith works for Acme .\n\nMary Jones lives in Paris .\n")
    res = cli_ok(app, ["extract", "--file", str(tmp_path / "in.txt"), "-c", str(run_dir)])
    assert len([ln for ln in res.output.splitlines() if ln.startswith("{")]) == 2


def test_extract_with_an_untrained_seq2seq_model(model_dirs):
    res = cli_ok(app, ["extract", "The patient took aspirin and developed a rash .", "--model", str(model_dirs["t5"]),
                       "--schema", "phee"])  # fmt: skip
    assert json.loads([ln for ln in res.output.splitlines() if ln.startswith("{")][-1])["events"] is not None


def _schema_file(tmp_path, text, name="my.toml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


BAD_ENTITY = 'name = "x"\n[entities.Peop]\nprompt = "People: {entity}"\n'
NO_PROMPT = 'name = "x"\n[entities.Peop]\ndescription = "person"\n'


@pytest.mark.parametrize("args, match", [
    (["prompts", "--schema", "nosuch"], "neither a bundled schema nor a file"),
    (["prompts", "--schema", "@BAD"], "my.toml.entities.Peop: missing field 'description'"),
    (["prompts", "--schema", "@BROKEN"], "not valid TOML"),
    (["prompts", "--schema", "@NOPROMPT", "--mode", "specific"], "entity type 'Peop' has no prompt"),
    (["prompts", "--mode", "fancy"], "unknown prompt mode 'fancy'"),
    (["extract", "", "--model", "@LLAMA"], "the text is empty"),
    (["extract", "--model", "@LLAMA"], "give either a TEXT argument or --file"),
    (["extract", "hello", "--model", "no-such-model"], "neither an effcore asset nor a folder"),
    (["extract", "hello", "--model", "@LLAMA", "--config", "@CFG_BAD"], "unknown field extract.colour"),
    (["extract", "hello", "--model", "@LLAMA", "--config", "@CFG_HUGE"], "more than max_chars=3"),
    (["extract", "hello", "--model", "@LLAMA", "--out", "x.json"], "unsupported extension '.json'"),
    (["train", "--data", "nosuch", "--model", "@LLAMA"], "unknown dataset 'nosuch'"),
    (["train", "--data", "conll04", "--model", "@LLAMA", "--config", "@CFG_TRAIN_BAD"], "unknown field 'epochs'"),
    (["train", "--data", "conll04", "--model", "@LLAMA", "--config", "@CFG_DATA_BAD"], "data.limit must be >= 1"),
    (["train", "--data", "conll04", "--model", "@LLAMA", "--out-dir", "@CFG_BAD/run"], "is a file, not a folder"),
    (["train", "--data", "casie", "--model", "@LLAMA", "--held-out", "Ransom", "--mode", "specific"],
     "--held-out needs composable prompts"),
    (["extract", "hello", "--model", "@LLAMA", "--whole"], "--whole applies to --file only"),
    (["extract", "hello", "--model", "@LLAMA", "-c", "@EMPTYDIR"], "--checkpoint or --model, not both"),
    (["eval", "@EMPTYDIR"], "no checkpoint at"),
    (["extract", "hello", "--model", "@LLAMA", "--null-margin", "nan"], "null_margin must be a finite number"),
    (["tune-null", "@EMPTYDIR", "--split", "test"], "tune-null on the test split"),
    (["tune-null", "@EMPTYDIR", "--grid", "1"], "at least two distinct finite margins"),
    (["tune-null", "@EMPTYDIR", "--grid", "0,x"], "not a comma-separated list of numbers"),
])  # fmt: skip
def test_bad_input_is_one_red_line_with_exit_2(args, match, tmp_path, model_dirs, data_dir):
    subs = {
        "@BAD": _schema_file(tmp_path, BAD_ENTITY),
        "@BROKEN": _schema_file(tmp_path, "name = [unclosed", "broken.toml"),
        "@NOPROMPT": _schema_file(tmp_path, NO_PROMPT, "noprompt.toml"),
        "@LLAMA": str(model_dirs["llama"]),
        "@EMPTYDIR": str(tmp_path),
    }
    for key, text in (("@CFG_BAD", "[extract]\ncolour = 1\n"), ("@CFG_HUGE", "[extract]\nmax_chars = 3\n"),
                      ("@CFG_TRAIN_BAD", "epochs = 3\n"), ("@CFG_DATA_BAD", "[data]\nlimit = 0\n")):  # fmt: skip
        (tmp_path / f"{key[1:]}.toml").write_text(text)
        subs[key] = str(tmp_path / f"{key[1:]}.toml")
    before = set(tmp_path.rglob("*"))
    cli_fails(
        app,
        [subs.get(key, key) + sep + rest for key, sep, rest in (a.partition("/") for a in args)]
        + (["--data-dir", str(data_dir)] if args[0] == "train" else []),
        match,
    )
    assert set(tmp_path.rglob("*")) == before, "nothing may be written by a failing command"


def test_a_checkpoint_for_another_schema_is_one_red_line(run_dir, data_dir, tmp_path):
    cli_fails(app, ["eval", str(run_dir), "--schema", "phee", "--data", "phee", "--data-dir", str(data_dir),
                    "--out", str(tmp_path / "never.json")], "does not fit schema 'phee'")  # fmt: skip
    assert not (tmp_path / "never.json").exists()
    cli_fails(app, ["extract", "x y", "-c", str(run_dir), "--schema", "casie"], "does not fit schema 'casie'")


def test_huge_file_is_refused_before_any_output(run_dir, tmp_path):
    (tmp_path / "cfg.toml").write_text("[extract]\nmax_chars = 50\n")
    (tmp_path / "big.txt").write_text("short line .\n" + "word " * 40 + "\n")
    res = cli_fails(app, ["extract", "--file", str(tmp_path / "big.txt"), "-c", str(run_dir), "--config",
                          str(tmp_path / "cfg.toml"), "--out", str(tmp_path / "o.jsonl")], "more than max_chars=50")  # fmt: skip
    assert "{" not in res.output and not (tmp_path / "o.jsonl").exists()


def test_eval_options_that_do_not_apply_are_refused(run_dir, data_dir, tmp_path):
    base = ["eval", str(run_dir), "--data-dir", str(data_dir), "--out", str(tmp_path / "never.json")]
    cli_fails(app, [*base, "--split", "validation"], "unknown split 'validation'")
    cli_fails(app, [*base, "--relations", "maybe"], "use judge, direct or judge,direct")
    cli_fails(app, [*base, "--schema", "phee", "--relations", "judge"], "schema 'phee' has no relations")
    assert not (tmp_path / "never.json").exists()
