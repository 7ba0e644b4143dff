"""The merak CLI: tables and files from partition, schedule and simulate; one-line errors for bad input."""

from __future__ import annotations

import json

import pytest

from effcore.testing.cli import cli_fails, cli_ok
from merak.cli import app


def test_partition_prints_contiguous_stages_and_writes_json(tmp_path):
    out = tmp_path / "p.json"
    result = cli_ok(app, ["partition", "-m", "tiny:llama", "--stages", "2", "--seq-len", "32", "--recompute", "0.5",
                          "--out", str(out)])  # fmt: skip
    assert "slowest/mean" in result.output
    data = json.loads(out.read_text())
    stages = data["stages"]
    assert [s["index"] for s in stages] == [0, 1] and stages[0]["first"] == 0
    assert stages[1]["first"] == stages[0]["last"] + 1 and stages[1]["last"] == len(data["shards"]) - 1
    assert stages[0]["recompute_ratio"] == 0.5 and stages[1]["recompute_ratio"] == 0.0


def test_schedule_prints_every_stage(tmp_path):
    out = tmp_path / "s.csv"
    cli_ok(
        app, ["schedule", "shifted-critical-path", "--stages", "4", "--microbatches", "6", "--out", str(out)]
    )
    lines = out.read_text().splitlines()
    assert lines[0] == "stage,instructions" and len(lines) == 5
    assert lines[3].startswith("2,F0* F1* F2 R0 B0 R1 B1")


def test_simulate_compares_schedules_and_draws_the_chosen_one(tmp_path):
    out, plot = tmp_path / "sim.json", tmp_path / "t.png"
    cli_ok(app, ["simulate", "-m", "tiny:gpt2", "--stages", "2", "--microbatches", "4", "--seq-len", "32",
                 "--plot", str(plot), "--out", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert {r["schedule"] for r in data["rows"]} == {"gpipe", "1f1b", "pre-recompute", "last-no-recompute",
                                                     "shifted-critical-path"}  # fmt: skip
    gpipe = data["results"]["gpipe"]
    assert gpipe["peak_inflight"] == [4, 4] and 0 < gpipe["bubble_overall"] < 1
    assert plot.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["partition", "-m", "tiny:llama", "--stages", "0"], "--stages must be at least 1"),
        (["partition", "-m", "tiny:llama", "--method", "greedy"], "unknown --method"),
        (["partition", "-m", "tiny:llama", "--recompute", "1.5"], "--recompute must be in [0, 1]"),
        (["partition", "-m", "tiny:llama", "--spec", "TPU"], "unknown accelerator"),
        (["partition", "-m", "tiny:gpt2", "--seq-len", "4096"], "exceeds the model's 256 positions"),
        (
            ["partition", "-m", "tiny:llama", "--stages", "40", "--seq-len", "16"],
            "pipeline stages but the model splits into only",
        ),
        (["partition", "-m", "/no/such/folder"], "is not a bundled model"),
        (["partition", "-m", "tiny:llama", "--out", "p.xlsx"], "use .json or .csv"),
        (["schedule", "zb", "--stages", "2"], "unknown schedule"),
        (
            ["schedule", "pre-recompute", "--stages", "4", "--microbatches", "2"],
            "at least as many micro-batches",
        ),
        (["simulate", "-m", "tiny:llama", "--bandwidth", "fast"], "cannot read a memory size"),
        (["simulate", "-m", "tiny:llama", "--schedule", "zb"], "unknown --schedule"),
        (["simulate", "-m", "tiny:llama", "--plot", "t.gif"], "use .png or .pdf or .svg"),
        (["train", "-m", "tiny:llama", "--mesh", "1,2"], "--mesh takes three sizes"),
        (
            ["train", "-m", "tiny:llama", "--mesh", "1,3,1"],
            "tp=3 does not divide the model's num_attention_heads=4",
        ),
        (["train", "-m", "tiny:llama", "--steps", "0"], "--steps must be at least 1"),
        (["train", "-m", "tiny:llama", "--schedule", "zb"], "unknown --schedule"),
        (["train", "-m", "tiny:llama", "--data", "mnist"], "unknown --data"),
        (["train", "-m", "tiny:llama", "--tp-overlap", "--batch", "1"], "must be even"),
        (["train", "-m", "tiny:gpt2", "--seq-len", "999"], "exceeds the model's 256 positions"),
        (["bench", "-m", "tiny:llama", "--cases", "fastest"], "unknown bench case"),
        (["bench", "-m", "tiny:llama", "--stages", "4", "--microbatches", "2"], "at least --stages"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, match):
    cli_fails(app, args, match)


def test_a_malformed_config_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    cli_fails(app, ["partition", "-m", str(tmp_path)], "is not a valid HF config")


@pytest.mark.distributed
def test_train_runs_on_four_ranks_under_torchrun(tmp_path):
    out = tmp_path / "train.json"
    cli_ok(app, ["train", "-m", "tiny:llama", "--mesh", "1,2,2", "--steps", "2", "--seq-len", "64",
                 "--schedule", "shifted-critical-path", "--recompute", "0.5", "--out", str(out)])  # fmt: skip
    data = json.loads(out.read_text())
    assert [row["step"] for row in data["steps"]] == [0, 1]
    assert all(4.0 < row["loss"] < 6.0 for row in data["steps"]), "tiny random model: loss near ln(128)"
    assert sorted(r["rank"] for r in data["ranks"]) == [0, 1, 2, 3]
    assert all(r["busy_s"] > 0 and r["events"] > 0 for r in data["ranks"])


@pytest.mark.distributed
@pytest.mark.parametrize(
    ("fail_at", "match"),
    [
        ("1:0:error", "rank 1: failed: RuntimeError: injected failure at step 0"),
        ("3:1:exit", "rank 3 died with exit code 17 without reporting an error"),
    ],
)
def test_a_failing_rank_ends_the_job_with_its_cause(fail_at, match):
    import time

    start = time.monotonic()
    cli_fails(app, ["train", "-m", "tiny:llama", "--mesh", "2,1,2", "--steps", "3", "--seq-len", "32",
                    "--fail-at", fail_at, "--rank-timeout", "30"], match)  # fmt: skip
    assert time.monotonic() - start < 240, "the other ranks must not wait for the dead one forever"
