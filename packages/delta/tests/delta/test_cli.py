"""The delta CLI: tables and files from every command; one-line errors for bad input, before any work."""

from __future__ import annotations

import json

import pytest

from delta.cli import app
from effcore.testing.cli import cli_fails, cli_ok


def test_profile_plan_and_train_write_their_results(tmp_path):
    prof = tmp_path / "p.csv"
    cli_ok(app, ["profile", "-m", "tiny", "--batch", "4", "--device", "cpu", "--out", str(prof)])
    assert prof.read_text().splitlines()[0].startswith("block,saved_tensors,saved_MiB")
    out, plot = tmp_path / "plan.json", tmp_path / "plan.png"
    cli_ok(app, ["plan", "-m", "tiny", "--batch", "16", "--budget", "600KiB", "--device", "cpu", "--out", str(out),
                 "--plot", str(plot)])  # fmt: skip
    data = json.loads(out.read_text())
    assert data["projected_peak"] <= 600 * 1024 and plot.stat().st_size > 0
    out = tmp_path / "train.json"
    cli_ok(app, ["train", "-m", "tiny", "--batch", "16", "--budget", "600KiB", "--steps", "2", "--device", "cpu",
                 "--out", str(out), "--plot", str(tmp_path / "t.svg")])  # fmt: skip
    steps = json.loads(out.read_text())["steps"]
    assert [s["profiled"] for s in steps] == [True, False]
    assert all(s["held_peak_MiB"] * 2**20 <= 600 * 1024 for s in steps)


def test_maxbatch_and_evoformer_tables(tmp_path):
    out = tmp_path / "mb.json"
    cli_ok(app, ["maxbatch", "-m", "tiny", "--budget", "500KiB", "--batches", "8,32,128", "--device", "cpu",
                 "--methods", "none,offload,delta,torch-save-on-cpu", "--out", str(out)])  # fmt: skip
    rows = {r["method"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["delta"]["max_batch"] > rows["none"]["max_batch"] == 8
    assert rows["torch-save-on-cpu"]["max_batch"] == rows["offload"]["max_batch"]
    out = tmp_path / "evo.csv"
    cli_ok(app, ["evoformer", "--lengths", "6", "--forms", "plain,delta", "--out", str(out)])
    assert len(out.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["plan", "--budget", "lots"], "--budget: cannot read a memory size"),
        (["plan", "--policy", "dtr"], "policy 'dtr' needs --budget"),
        (["plan", "--policy", "none", "--budget", "1GiB"], "--budget does not apply to policy 'none'"),
        (["plan", "--policy", "magic", "--budget", "1GiB"], "unknown policy 'magic'"),
        (["plan", "-m", "vgg", "--budget", "1GiB"], "unknown model 'vgg'"),
        (
            ["plan", "-m", "tiny", "--image-size", "64", "--budget", "1GiB"],
            "--image-size applies to the ResNets",
        ),
        (["plan", "-m", "tiny", "--budget", "1KiB", "--device", "cpu"], "below the minimum"),
        (["train", "--steps", "0", "--budget", "1GiB"], "--steps must be at least 1"),
        (["profile", "--batch", "0"], "--batch must be at least 1"),
        (["maxbatch", "--methods", "none,fast"], "--methods: unknown ['fast']"),
        (["maxbatch", "--batches", "0,4"], "--batches needs positive integers"),
        (["evoformer", "--forms", "plain,fast"], "unknown forms ['fast']"),
        (["evoformer", "--delta-fraction", "0"], "delta_fraction must be in (0, 1]"),
        (["evoformer", "--limit", "16GiB", "--forms", "delta"], "unknown forms ['delta']"),
        (["evoformer", "--limit", "lots"], "--limit"),
        (["plan", "--out", "x.txt", "--budget", "1GiB"], "x.txt"),
        (["train", "--device", "cuda", "--budget", "1GiB"], "no CUDA device"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, match):
    cli_fails(app, args, match)
