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


def test_resnet_on_cifar10_reads_test_images_upscaled_with_a_ten_class_head(tmp_path, monkeypatch):
    import torch
    from torch.nn import functional as F

    from delta.models import build_model
    from effcore.assets import load_cifar10
    from effcore.testing.images import write_cifar10

    monkeypatch.setenv("EFFML_DATA", str(write_cifar10(tmp_path / "data", train=1, test=2)))
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    case = build_model("resnet50", data="cifar10", image_size=40)
    assert case.model[-1][-1].out_features == 10
    x, y = case.make_batch(6, torch.Generator().manual_seed(0))
    test = load_cifar10("test")
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:6]
    want = F.interpolate(
        test.normalise(test.images[idx]), size=(40, 40), mode="bilinear", align_corners=False
    )
    assert x.shape == (6, 3, 40, 40) and torch.equal(x, want) and torch.equal(y, test.labels[idx])
    out = tmp_path / "p.json"
    cli_ok(app, ["profile", "-m", "resnet50", "--data", "cifar10", "--image-size", "32", "--batch", "2",
                 "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert json.loads(out.read_text())["saved_bytes"] > 0
    cli_fails(app, ["profile", "-m", "resnet50", "--data", "cifar10", "--batch", "21", "--device", "cpu"],
              "larger than CIFAR-10's test split (20 images)")  # fmt: skip


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
        (
            ["plan", "-m", "tiny", "--data", "cifar10", "--budget", "1GiB"],
            "--data cifar10 does not apply to 'tiny'",
        ),
        (["profile", "-m", "resnet50", "--data", "imagenet"], "--data imagenet does not apply to 'resnet50'"),
        (["profile", "-m", "resnet50", "--seq-len", "64"], "--seq-len applies to smollm2 only"),
        (["profile", "-m", "smollm2", "--seq-len", "1"], "--seq-len must be at least 2"),
        (["profile", "-m", "smollm2", "--image-size", "64"], "--image-size applies to the ResNets only"),
        (
            ["maxbatch", "-m", "smollm2", "--data", "synthetic"],
            "--data synthetic does not apply to 'smollm2'",
        ),
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
