"""The tfdmnet CLI: help, every command on small inputs, one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from effcore.testing.cli import cli_fails, cli_ok
from tfdmnet.cli import app
from tfdmnet.kernels.mixing import BACKENDS
from tfdmnet.models import PRESETS
from tfdmnet.spectral import SPECTRA
from tfdmnet.train import RECIPES, load_run


def _ok(args):
    return cli_ok(app, args)


def _fails(args, match):
    return cli_fails(app, args, match)


def test_help_lists_every_command():
    out = _ok(["--help"]).output
    for command in ("train", "eval", "ops", "bench", "models"):
        assert command in out


def test_help_lists_the_choices_from_their_registries_and_the_config_tables():
    # Generated from PRESETS, RECIPES, SPECTRA and BACKENDS; "[eml]" must survive rich markup.
    out = " ".join(_ok(["train", "--help"]).output.split())
    for name in (*PRESETS, *RECIPES, *SPECTRA, "[eml]", "[recipe]"):
        assert name in out, f"train --help lacks {name}"
    out = " ".join(_ok(["ops", "--help"]).output.split())
    assert all(name in out for name in PRESETS)
    out = " ".join(_ok(["bench", "--help"]).output.split())
    for name in BACKENDS:
        assert name in out, f"bench --help lacks {name}"


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
    state = load_run(run)
    assert state["recipe"]["seed"] == 0
    assert (
        state["model"]["eml"]["spectrum"] == "full"
        and state["model"]["eml"]["nonlinearity"] == "spatial_relu"
    )
    assert state["recipe"]["epochs"] == 1 and state["recipe"]["batch_size"] == 64
    toml.write_text('[eml]\nspectrum = "half"\n')
    _fails(["train", "-m", "lenet-cnn", "--config", str(toml)], "[eml] does not apply to lenet-cnn")
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
    _ok(["bench", "--sizes", "6", "--kernels", "3", "--channels", "2", "--batch", "2", "--repeat", "1",
         "--device", "cpu", "--out", str(tmp_path / "b.json")])  # fmt: skip
    payload = json.loads((tmp_path / "b.json").read_text())
    assert (
        payload["meta"]["machine"]["threads"] >= 1
        and payload["meta"]["machine"]["cpu"]
        and len(payload["rows"]) == 8
    )


def _train_args(mnist_dir, run, *extra):
    return ["train", "--data-dir", str(mnist_dir), "--run-dir", str(run), "--epochs", "1",
            "--batch-size", "64", "--device", "cpu", *extra]  # fmt: skip


def test_train_with_a_holdout_reports_validation_accuracy(mnist_dir, tmp_path):
    out = _ok(
        _train_args(mnist_dir, tmp_path / "run", "--holdout", "50", "--out", str(tmp_path / "m.json"))
    ).output
    assert "val accuracy" in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["eval_split"] == "val" and metrics["train_images"] == 250
    assert "val_accuracy" in metrics and "test_accuracy" not in metrics


def test_the_config_files_seed_wins_unless_seed_is_given(mnist_dir, tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("[recipe]\nseed = 3\n")
    _ok(_train_args(mnist_dir, tmp_path / "a", "--config", str(toml)))
    assert load_run(tmp_path / "a")["recipe"]["seed"] == 3
    _ok(_train_args(mnist_dir, tmp_path / "b", "--config", str(toml), "--seed", "5"))
    assert load_run(tmp_path / "b")["recipe"]["seed"] == 5


def test_spectrum_flag_builds_the_network_on_that_spectrum(mnist_dir, tmp_path):
    _ok(_train_args(mnist_dir, tmp_path / "run", "--spectrum", "half"))
    assert load_run(tmp_path / "run")["model"]["eml"]["spectrum"] == "half"
    _ok(_train_args(mnist_dir, tmp_path / "default"))
    assert load_run(tmp_path / "default")["model"]["eml"]["spectrum"] == "full"
    _ok(_train_args(mnist_dir, tmp_path / "cnn", "-m", "lenet-cnn"))
    for run, spectrum in (("run", "half"), ("cnn", None)):  # eval names the spectrum; a CNN has none
        _ok(["eval", "--run-dir", str(tmp_path / run), "--data-dir", str(mnist_dir), "--device", "cpu",
             "--out", str(tmp_path / "e.json")])  # fmt: skip
        assert json.loads((tmp_path / "e.json").read_text())["spectrum"] == spectrum, run
    _ok(["ops", "-m", "lenet-tfdmnet", "--out", str(tmp_path / "f.json")])
    full = json.loads((tmp_path / "f.json").read_text())
    _ok(["ops", "-m", "lenet-tfdmnet", "--spectrum", "half", "--out", str(tmp_path / "h.json")])
    half = json.loads((tmp_path / "h.json").read_text())
    assert (full["spectrum"], half["spectrum"]) == ("full", "half")
    assert half["blocks"][-1]["measured_macs"] < full["blocks"][-1]["measured_macs"]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["train", "--width", "0"], "width must be a positive number, got 0.0"),
        (["train", "--width", "-1"], "width must be a positive number, got -1.0"),
        (["train", "--width", "nan"], "width must be a positive number, got nan"),
        (["train", "--width", "0.05"], "leaves a 6-channel layer with no channels"),
        (["models", "--width", "0"], "width must be a positive number"),
        (["train", "--epochs", "0"], "Invalid value for '--epochs'"),
        (["train", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["train", "--limit-train", "0"], "Invalid value for '--limit-train'"),
        (["train", "--holdout", "-1"], "Invalid value for '--holdout'"),
        (["train", "--threads", "0"], "Invalid value for '--threads'"),
        (["train", "--lr", "0"], "finite lr > 0"),
        (["train", "--lr", "inf"], "finite lr > 0"),
        (["train", "--dataset", "svhn"], "unknown dataset 'svhn'"),
        (["train", "--augment"], "Recipe.augment (random crop + flip) is for cifar10, not mnist"),
        (["train", "--optimizer", "lion"], "Recipe.optimizer='lion' is not one of sgd, rmsprop, adamw"),
        (["train", "--spectrum", "quarter"], "--spectrum 'quarter' is not one of full, half"),
        (["train", "-m", "lenet-cnn", "--spectrum", "full"], "--spectrum does not apply to lenet-cnn"),
        (["train", "-m", "lenet-tfdmnet", "--fix-every", "2"], "--fix-every does not apply to lenet-tfdmnet"),
        (["eval", "--batch-size", "0"], "Invalid value for '--batch-size'"),
        (["ops", "-m", "lenet-cnn", "--spectrum", "half"], "--spectrum does not apply to lenet-cnn"),
        (["ops", "-m", "lenet-tfdmnet", "--sizes", "4"], "--sizes apply to --sweep, not to -m lenet-tfdmnet"),
        (["ops", "-m", "lenet-tfdmnet", "--sweep"], "-m and --sweep are two modes"),
        (["ops", "--sweep", "--width", "0.5"], "--width applies to -m PRESET, not to the sweep"),
        (["ops", "--sweep", "--sizes", "2", "--kernels", "3"], "the sweep has no case"),
        (["bench", "--sizes", "2", "--kernels", "3"], "no bench case"),
        (["bench", "--batch", "0"], "Invalid value for '--batch'"),
        (["bench", "--repeat", "0"], "Invalid value for '--repeat'"),
        (["bench", "--backend", "cuda"], "--backend 'cuda' is not one of auto, triton, torch, reference"),
        (["bench", "--plot", "b.gif"], "--plot b.gif: unsupported extension '.gif'"),
        (["bench", "--out", "b.pdf"], "unsupported extension '.pdf'"),
        (["eval", "--out", "e.xlsx"], "unsupported extension '.xlsx'"),
        (["models", "--out", "m.txt"], "unsupported extension '.txt'"),
        (["ops", "--out", "o.png"], "unsupported extension '.png'"),
    ],
)
def test_bad_values_and_inapplicable_options_fail_in_one_line(args, match):
    _fails(args, match)


def test_output_paths_are_checked_before_any_work(tmp_path):
    empty = tmp_path / "no-data"  # training would fail on the missing data if it started first
    empty.mkdir()
    (tmp_path / "afile").write_text("x")
    base = ["train", "--data-dir", str(empty)]
    result = _fails([*base, "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "m.xlsx")],
                    "unsupported extension '.xlsx'")  # fmt: skip
    assert not (tmp_path / "r").exists(), "the run folder was created before the --out check"
    assert "mnist" not in result.output
    _fails([*base, "--run-dir", str(tmp_path / "afile")], "is a file, not a folder")
    _fails([*base, "--run-dir", "/proc/run"], "cannot create files in /proc")
    (tmp_path / "d.json").mkdir()
    _fails([*base, "--run-dir", str(tmp_path / "r"), "--out", str(tmp_path / "d.json")], "is a directory")
