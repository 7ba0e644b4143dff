"""Training: it learns, checkpoints every epoch, resumes exactly, refuses foreign or corrupt run folders."""

from __future__ import annotations

import json

import pytest
import torch

from effcore.errors import ConfigError
from tfdmnet.models import get_preset
from tfdmnet.train import RunError, evaluate, load_run, lr_at, mnist_cpu, model_from_run, train


def _recipe(**kw):
    return mnist_cpu().replace(**{"epochs": 3, "batch_size": 32, "lr": 0.05, "eval_batch_size": 64, **kw})


def test_lenet_tfdmnet_learns_the_synthetic_digits(mnist_dir, tmp_path):
    metrics = train(get_preset("lenet-tfdmnet"), _recipe(), tmp_path / "run", data_dir=mnist_dir)
    assert metrics["test_accuracy"] >= 0.9, metrics["history"]
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2, 3]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test_accuracy"] == metrics["test_accuracy"]


def test_an_interrupted_run_resumes_to_the_same_weights(mnist_dir, tmp_path):
    # CEMNet exercises free weights, Weight Fixation and the Gaussian dropout RNG.
    cfg, r = get_preset("lenet-cemnet"), _recipe()
    straight = train(cfg, r, tmp_path / "a", data_dir=mnist_dir)

    def stop_after_epoch_2(kind, **info):
        if kind == "epoch_end" and info["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, r, tmp_path / "b", data_dir=mnist_dir, on_event=stop_after_epoch_2)
    assert load_run(tmp_path / "b")["epoch"] == 2
    events = []
    resumed = train(cfg, r, tmp_path / "b", data_dir=mnist_dir, on_event=lambda k, **i: events.append(k))
    assert "resume" in events and events.count("epoch_start") == 1
    assert resumed["history"] == [
        {**h, "seconds": resumed["history"][i]["seconds"]} for i, h in enumerate(straight["history"])
    ]
    a, b = load_run(tmp_path / "a")["model_state"], load_run(tmp_path / "b")["model_state"]
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs after resume"


def test_a_folder_holding_another_run_is_refused_and_kept(mnist_dir, tmp_path):
    cfg = get_preset("lenet-cnn")
    train(cfg, _recipe(epochs=1), tmp_path / "run", data_dir=mnist_dir)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(RunError, match=r"holds a different run \(recipe differs in: lr\).*--restart"):
        train(cfg, _recipe(epochs=1, lr=0.1), tmp_path / "run", data_dir=mnist_dir)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    restarted = train(cfg, _recipe(epochs=1, lr=0.1), tmp_path / "run", data_dir=mnist_dir, restart=True)
    assert restarted["epochs"] == 1


def test_a_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"\x00" * 10)
    with pytest.raises(RunError, match="not a readable checkpoint"):
        load_run(tmp_path)
    with pytest.raises(RunError, match="no checkpoint in"):
        load_run(tmp_path / "empty")


def test_a_preset_for_other_images_is_refused_before_the_data_or_the_folder_is_touched(tmp_path):
    with pytest.raises(ConfigError, match="vgg16-mixture takes 3x32x32 images but mnist has 1x28x28"):
        train(
            get_preset("vgg16-mixture", width=0.125), _recipe(), tmp_path / "run", data_dir=tmp_path / "none"
        )
    assert not (tmp_path / "run").exists()


def test_restart_deletes_nothing_when_the_data_is_missing(mnist_dir, tmp_path):
    from effcore.errors import DataNotFoundError

    cfg = get_preset("lenet-cnn")
    train(cfg, _recipe(epochs=1), tmp_path / "run", data_dir=mnist_dir)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(DataNotFoundError):
        train(cfg, _recipe(epochs=1), tmp_path / "run", data_dir=tmp_path / "none", restart=True)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_the_checkpoint_evaluates_to_the_logged_accuracy(mnist_dir, tmp_path):
    from tfdmnet.data import load_mnist

    metrics = train(get_preset("lenet-tfdmnet"), _recipe(epochs=1), tmp_path / "run", data_dir=mnist_dir)
    model = model_from_run(load_run(tmp_path / "run"))
    again = evaluate(model, load_mnist("test", data_dir=mnist_dir))
    assert again["accuracy"] == metrics["test_accuracy"]


@pytest.mark.parametrize(
    ("change", "match"),
    [({"epochs": 0}, "epochs"), ({"optimizer": "lion"}, "optimizer"), ({"lr": -1.0}, "lr > 0"),
     ({"warmup_epochs": 30.0}, "warmup_epochs"), ({"fix_every": -1}, "fix_every"),
     ({"augment": True}, "augment .* is for cifar10, not mnist")],
)  # fmt: skip
def test_recipe_fields_are_validated(change, match):
    with pytest.raises(ConfigError, match=match):
        mnist_cpu().replace(**change)


def test_schedule_warms_up_then_decays_to_zero():
    r = mnist_cpu().replace(epochs=4, warmup_epochs=1.0, lr=0.1)
    assert lr_at(r, 0, 10) == pytest.approx(0.01)
    assert lr_at(r, 9, 10) == pytest.approx(0.1)
    assert lr_at(r, 10, 10) == pytest.approx(0.1)
    assert lr_at(r, 39, 10) < 0.001
    assert all(lr_at(r, s, 10) >= lr_at(r, s + 1, 10) for s in range(10, 39))


def test_holdout_evaluates_on_held_out_training_images(mnist_dir, tmp_path):
    events = []
    metrics = train(get_preset("lenet-cnn"), _recipe(epochs=1, holdout=50), tmp_path / "run",
                    data_dir=mnist_dir, on_event=lambda k, **i: events.append((k, i)))  # fmt: skip
    data = next(i for k, i in events if k == "data")
    assert data == {"train": 250, "eval": 50, "split": "val"}
    assert metrics["eval_split"] == "val" and "val_accuracy" in metrics and "test_accuracy" not in metrics
    with pytest.raises(ConfigError, match="cannot hold out 300 of 300"):
        train(get_preset("lenet-cnn"), _recipe(holdout=300), tmp_path / "run2", data_dir=mnist_dir)
