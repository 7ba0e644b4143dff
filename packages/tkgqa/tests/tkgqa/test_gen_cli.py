"""GenTKGQA's generator commands: bad options fail in one line before anything loads."""

from __future__ import annotations

import pytest

from effcore.testing.cli import cli_fails
from tkgqa.cli import app


@pytest.fixture
def files(tmp_path):
    gnn, qs = tmp_path / "gnn.pt", tmp_path / "q.jsonl"
    gnn.write_bytes(b"x")
    qs.write_text("{}\n")
    return ["--gnn", str(gnn), "--questions", str(qs), "--checkpoint", str(tmp_path / "gen.pt")]


@pytest.mark.parametrize(
    "args,match",
    [
        (["--steps", "0"], "steps must be >= 1"),
        (["--batch", "0"], "batch must be >= 1"),
        (["--facts", "0"], "facts must be >= 1"),
        (["--llm", "gpt-5"], "--llm 'gpt-5' is not one of smollm2, gemma3-270m"),
        (["-n", "0"], "--limit must be >= 1"),
        (["--max-minutes", "0"], "--max-minutes must be > 0"),
        (["--encoder", "bert"], "--encoder 'bert'"),
        (["--resume"], "does not exist yet (drop --resume to start)"),
        (["--kg", "nope.tsv"], "neither 'multitq', 'icews14' nor an existing TSV"),
    ],
)
def test_gen_train_bad_options(files, args, match):
    cli_fails(app, ["gen-train", *files, *args], match)


def test_gen_train_needs_its_inputs(tmp_path):
    cli_fails(app, ["gen-train", "--checkpoint", str(tmp_path / "g.pt")], "--gnn is missing")
    cli_fails(app, ["gen-train", "--checkpoint", str(tmp_path / "g.bin")], "--checkpoint")
    cli_fails(app, ["gen-train", "--checkpoint", str(tmp_path / "g.pt"), "--gnn", str(tmp_path / "none.pt")],
              "none.pt does not exist")  # fmt: skip


def test_gen_ask_bad_input(tmp_path):
    cli_fails(app, ["gen-ask", "  "], "the question is empty")
    cli_fails(app, ["gen-ask", "Who?", "--facts", "0"], "--facts must be >= 1")
    cli_fails(app, ["gen-ask", "Who?"], "--gnn is missing")


@pytest.mark.parametrize(
    "args,match",
    [
        (["--method", "oracle"], "--method 'oracle' is not one of agent, gentkgqa"),
        (["--generator", "g.pt"], "--generator apply to --method gentkgqa"),
        (["--variant", "no_gnn"], "--variant apply to --method gentkgqa"),
        (["--method", "gentkgqa", "--policy", "openai"], "--policy does not apply to --method gentkgqa"),
        (["--method", "gentkgqa", "--variant", "no_llm"], "--variant 'no_llm' is not one of full"),
        (["--method", "gentkgqa"], "--gnn is missing"),
        (["--method", "gentkgqa", "--retrieval"], "--retrieval does not apply to --method gentkgqa"),
        (["--method", "gentkgqa", "--no-abstain"], "--abstain does not apply to --method gentkgqa"),
    ],
)
def test_eval_method_options(args, match):
    cli_fails(app, ["eval", *args], match)
