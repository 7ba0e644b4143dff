"""tfdmnet end to end on real MNIST: the CLI trains a TFDMNet mixture and evaluates its checkpoint."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def mnist_root():
    try:
        root = data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    if not (root / "mnist" / "mnist.npz").is_file():
        pytest.skip(f"no mnist/mnist.npz in {root}")
    return root


def test_cli_trains_and_evaluates_lenet_tfdmnet(mnist_root, tmp_path):
    from tfdmnet.cli import app

    runner = CliRunner()
    run = tmp_path / "run"
    base = ["train", "-m", "lenet-tfdmnet", "--run-dir", str(run), "--limit-train", "6000",
            "--batch-size", "64", "--device", "cpu", "--data-dir", str(mnist_root)]  # fmt: skip
    first = runner.invoke(app, [*base, "--epochs", "2", "--out", str(tmp_path / "a.json")])
    assert first.exit_code == 0, first.output
    metrics = json.loads((tmp_path / "a.json").read_text())
    # 6,000 real digits, 2 epochs: a working EML network is far above chance on the 10,000 test digits.
    assert metrics["test_accuracy"] > 0.95, metrics["history"]
    result = runner.invoke(app, ["eval", "--run-dir", str(run), "--device", "cpu", "--data-dir",
                                 str(mnist_root), "--out", str(tmp_path / "e.json")])  # fmt: skip
    assert result.exit_code == 0, result.output
    evaluated = json.loads((tmp_path / "e.json").read_text())
    assert evaluated["accuracy"] == metrics["test_accuracy"] and evaluated["epoch"] == 2
    assert evaluated["spectrum"] == "full", "the preset's default is the authors' full fft2 spectrum"
