"""The grass CLI: a run's table and files, the importance plot, and one red line for bad input."""

from __future__ import annotations

import json

import pytest

from effcore.testing.cli import cli_fails, cli_ok
from grass.cli import app

_TINY = ["-m", "tiny:llama", "--batch", "2", "--seq-len", "128", "--eval-limit", "2", "--device", "cpu"]
_GRASS = ["--probe-steps", "1", "--sample-period", "2", "--update-period", "1"]


def test_train_then_importance_writes_result_and_plot(tmp_path):
    out, plot, cfg = tmp_path / "run.json", tmp_path / "mgn.png", tmp_path / "c.toml"
    cfg.write_text('method = "grass"\nsteps = 4\ngamma = 1\n')
    result = cli_ok(
        app, ["train", *_TINY, *_GRASS, "--no-normalize", "--config", str(cfg), "--out", str(out)]
    )
    assert "held-out answer loss" in result.output
    data = json.loads(out.read_text())
    assert data["config"]["gamma"] == 1 and len(data["rows"]) == 4 and data["rows"][0]["active"] == "probe"
    assert data["config"]["normalize"] is False
    assert data["summary"]["memory"]["gradients"] > 0 and data["summary"]["machine"]["device"] == "cpu"
    cli_ok(app, ["importance", str(out), "--plot", str(plot)])
    assert plot.stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["train", "--gamma", "0"], "--gamma must be at least 1"),
        (["train", *_TINY, "--gamma", "9", "--steps", "1"], "choose --gamma between 1 and 4"),
        (["train", "--method", "galore"], "unknown method 'galore'"),
        (["train", "-m", "llama-7b", "--steps", "1"], "unknown model 'llama-7b'"),
        (["train", "--offload", "disk"], "unknown --offload"),
        (["train", "--tau", "0"], "tau must be a positive number"),
        (["train", "--out", "run.xlsx"], "use .json or .csv"),
        (["train", "--config", "/no/such.toml"], "cannot read --config"),
        (["eval", "--run-dir", "/no/such/run"], "does not exist"),
        (["bench", "--pairs", "0"], "--pairs must be at least 1"),
        # checked before any model is loaded
        (["train", "--alpha", "0"], "--alpha must be in (0, 1]"),
        # a setting the method does not use is an error, not silently ignored
        (["train", "--method", "lora", "--gamma", "2"], "--gamma does not apply to --method lora"),
        (["train", "--method", "lisa", "--tau", "0.3"], "--tau does not apply to --method lisa"),
        (["train", "--method", "static-grass", "--alpha", "0.3"], "--alpha does not apply"),
        (["train", "--method", "full", "--offload", "layerwise"], "--offload does not apply"),
        (["train", "--save-every", "5"], "--save-every needs --run-dir"),
        (["train", "--task", "shakespeare", "--generate", "4"], "shakespeare has no answers to match"),
        (["train", "--eval-limit", "0"], "--eval-limit must be at least 1"),
        (["eval", "--task", "shakespeare", "--generate", "4"], "shakespeare has no answers to match"),
        (["eval", "--eval-limit", "0"], "--eval-limit must be at least 1"),
        (["eval", "-m", "llama-7b"], "unknown model 'llama-7b'"),
        (["eval", "--task", "mmlu"], "unknown task 'mmlu'"),
    ],
)
def test_bad_input_is_one_red_line(args, match):
    cli_fails(app, args, match)


def test_bad_config_key_and_foreign_checkpoint_and_nan(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("gama = 3\n")
    cli_fails(app, ["train", "--config", str(bad)], "unknown key 'gama'")
    lora = tmp_path / "lora.toml"
    lora.write_text("lora_r = 8\n")
    cli_fails(app, ["train", "--config", str(lora)], "--lora-r does not apply to --method grass")
    lora.write_text('method = "badam"\nbadam_order = "sideways"\n')
    cli_fails(app, ["train", "--config", str(lora)], "unknown --badam-order 'sideways'")
    run_dir = tmp_path / "run"
    cli_ok(
        app,
        [
            "train",
            *_TINY,
            "--method",
            "lisa",
            "--sample-period",
            "2",
            "--steps",
            "1",
            "--run-dir",
            str(run_dir),
        ],
    )
    before = (run_dir / "checkpoint.pt").read_bytes()
    cli_fails(
        app, ["train", *_TINY, *_GRASS, "--steps", "2", "--run-dir", str(run_dir)], "belongs to another run"
    )
    assert (run_dir / "checkpoint.pt").read_bytes() == before, "the other run's checkpoint was touched"
    cli_fails(app, ["eval", "--run-dir", str(run_dir), "-m", "smollm2"], "was written for model 'tiny:llama'")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "checkpoint.pt").write_text("not a checkpoint")
    cli_fails(app, ["eval", "--run-dir", str(junk)], "is not a readable grass checkpoint")
    nan_dir = tmp_path / "nan"
    cli_fails(app, ["train", *_TINY, "--method", "full", "--lr", "1e30", "--steps", "4", "--run-dir", str(nan_dir)],
              "at step 2: stopped before updating")  # fmt: skip
    result = tmp_path / "lisa.json"
    result.write_text(json.dumps({"config": {"method": "lisa"}, "importance": []}))
    cli_fails(app, ["importance", str(result)], "has no importance history")
