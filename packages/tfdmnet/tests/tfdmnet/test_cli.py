"""The tfdmnet CLI: help, every command on small inputs, one-line errors with exit code 2."""

from __future__ import annotations

import json

from effcore.testing.cli import cli_fails, cli_ok
from tfdmnet.cli import app


def _ok(args):
    return cli_ok(app, args)


def _fails(args, match):
    return cli_fails(app, args, match)


def test_help_lists_every_command():
    out = _ok(["--help"]).output
    for command in ("train", "eval", "ops", "bench", "models"):
        assert command in out


def test_models_lists_the_presets(tmp_path):
    out = _ok(["models", "--width", "0.25", "--out", str(tmp_path / "m.csv")]).output
    assert "vgg16-mixture" in out and "alexnet-cnn" in out
    assert (tmp_path / "m.csv").read_text().startswith("preset,")


def test_train_then_eval_on_synthetic_mnist(mnist_dir, tmp_path):
    run = tmp_path / "run"
    args = ["train", "-m", "lenet-tfdmnet", "--data-dir", str(mnist_dir), "--run-dir", str(run),
            "--epochs", "2", "--batch-size", "32", "--device", "cpu", "--out", str(tmp_path / "t.json")]  # fmt: skip
    out = _ok(args).output
    assert "test accuracy" in out
    metrics = json.loads((tmp_path / "t.json").read_text())
    result = _ok(["eval", "--run-dir", str(run), "--data-dir", str(mnist_dir), "--device", "cpu",
                  "--out", str(tmp_path / "e.json")])  # fmt: skip
    assert "lenet-tfdmnet" in result.output
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == metrics["test_accuracy"]
    resumed = _ok(args)  # all epochs done: resumes, trains nothing, reports the same result
    assert "resuming" in resumed.output
    _fails([*args[:-2], "--lr", "0.5"], "holds a different run")


def test_config_file_sets_eml_options_and_recipe_fields(mnist_dir, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[eml]\nspectrum = "full"\nnonlinearity = "spatial_relu"\n[recipe]\nepochs = 1\nbatch_size = 64\n'
    )
    run = tmp_path / "run"
    _ok(
        [
            "train",
            "--config",
            str(toml),
            "--data-dir",
            str(mnist_dir),
            "--run-dir",
            str(run),
            "--device",
            "cpu",
        ]
    )
    from tfdmnet.train import load_run

    state = load_run(run)
    assert (
        state["model"]["eml"]["spectrum"] == "full"
        and state["model"]["eml"]["nonlinearity"] == "spatial_relu"
    )
    assert state["recipe"]["epochs"] == 1 and state["recipe"]["batch_size"] == 64
    toml.write_text("[eml]\nspectra = 'full'\n")
    _fails(["train", "--config", str(toml)], "[eml] has unknown keys ['spectra']")
    toml.write_text("[eml\n")
    _fails(["train", "--config", str(toml)], "is not valid TOML")


def test_train_without_data_fails_in_one_line(tmp_path):
    _fails(
        ["train", "--data-dir", str(tmp_path), "--run-dir", str(tmp_path / "r")], "mnist/mnist.npz not found"
    )


def test_bad_options_fail_in_one_line(tmp_path):
    _fails(["train", "-m", "resnet"], "unknown model preset 'resnet'")
    _fails(["train", "--recipe", "cifar10-cpu", "-m", "lenet-cnn"], "is for cifar10, not mnist")
    _fails(["eval", "--run-dir", str(tmp_path)], "no checkpoint in")
    _fails(["ops", "--sweep", "--sizes", "4,x"], "--sizes takes comma-separated integers")


def test_ops_for_a_preset_and_the_sweep(tmp_path):
    out = _ok(["ops", "-m", "lenet-tfdmnet", "--out", str(tmp_path / "o.json")]).output
    assert "CNN twin" in out
    payload = json.loads((tmp_path / "o.json").read_text())
    assert payload["twin"] == "lenet-cnn" and payload["blocks"][-1]["block"] == "total"
    out = _ok(["ops", "--sweep", "--sizes", "8", "--kernels", "3", "--channels", "4"]).output
    assert "EML vs conv2d" in out


def test_bench_runs_a_tiny_case_and_plots(tmp_path):
    out = _ok(["bench", "--sizes", "6", "--kernels", "3", "--channels", "2", "--batch", "2",
               "--repeat", "2", "--device", "cpu", "--plot", str(tmp_path / "b.png"),
               "--out", str(tmp_path / "b.csv")]).output  # fmt: skip
    assert "vs_conv2d" in out or "vs_conv" in out
    assert (tmp_path / "b.png").stat().st_size > 1000
    rows = (tmp_path / "b.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 4  # header + (fwd, fwd+bwd) x 4 methods
