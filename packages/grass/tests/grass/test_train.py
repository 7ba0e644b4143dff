"""The training loop on a tiny Llama: an interrupted run resumes to the same weights (sampler RNG
included); a NaN loss stops with the step named and keeps the last good checkpoint; a checkpoint
of another run or model is refused; an unsupported model layout names the supported ones."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from effcore.errors import ConfigError
from grass.checkpoint import CHECKPOINT, load_checkpoint
from grass.config import RunConfig
from grass.layers import layer_map
from grass.train import TrainingError, run

_TINY = dict(model="tiny:llama", batch=2, seq_len=128, probe_steps=2, sample_period=2, update_period=2,
             train_limit=16, gamma=2)  # fmt: skip


def _run(tmp_path, **kw):
    return run(RunConfig(**{**_TINY, **kw}), device="cpu", run_dir=tmp_path, resume=True, eval_limit=2,
               measure_memory=False)  # fmt: skip


def test_interrupted_grass_run_resumes_to_the_same_weights(tmp_path):
    whole = _run(tmp_path / "whole", steps=8)
    _run(tmp_path / "split", steps=5, save_every=5)
    resumed = _run(tmp_path / "split", steps=8)
    assert [r["active"] for r in resumed.rows] == [r["active"] for r in whole.rows], "the sampler diverged"
    a = torch.load(tmp_path / "whole" / CHECKPOINT, weights_only=False)
    b = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=False)
    for name, tensor in a["model_state"].items():
        assert torch.equal(tensor, b["model_state"][name]), name
    assert [r["loss"] for r in resumed.rows] == [r["loss"] for r in whole.rows]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"loss is nan at step 4.*last good checkpoint \(step 2\)"):
        _run(tmp_path, steps=6, save_every=2, nan_at_step=3)
    record = load_checkpoint(
        tmp_path, fingerprint=RunConfig(**_TINY, steps=6).fingerprint(), model="tiny:llama"
    )
    assert record["step"] == 2


def test_checkpoint_of_another_run_or_model_is_refused(tmp_path):
    _run(tmp_path, steps=2, method="lisa")
    with pytest.raises(ConfigError, match="belongs to another run"):
        _run(tmp_path, steps=3, method="grass")
    with pytest.raises(ConfigError, match="was written for model 'tiny:llama'"):
        load_checkpoint(tmp_path, fingerprint="x", model="smollm2")


def test_unsupported_layout_names_the_supported_ones():
    with pytest.raises(ConfigError, match=r"supported layouts: model\.layers .*transformer\.h"):
        layer_map(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("method", ["grass", "lora"])
def test_checkpointing_bf16_and_accumulation_train_every_method(tmp_path, method):
    result = run(RunConfig(**{**_TINY, "method": method, "steps": 4, "grad_accum": 2, "bf16": True,
                              "gradient_checkpointing": True}), device="cpu", eval_limit=2, measure_memory=False)  # fmt: skip
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in result.rows)
    assert result.summary["eval"]["loss"] == result.summary["eval"]["loss"]


@pytest.mark.parametrize(
    ("family", "layout"), [("llama", "model.layers"), ("gemma3", "model.layers"), ("gpt2", "transformer.h")]
)
def test_every_parameter_belongs_to_one_unit(family, layout):
    from effcore.testing.tiny import tiny_model

    model = tiny_model(family, tie_word_embeddings=True)
    lmap = layer_map(model)
    assert lmap.layout == layout and lmap.num_layers == model.config.num_hidden_layers
    seen = [id(p) for ps in lmap.layers for _, p in ps] + [id(p) for _, p in lmap.embed_head]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()), (
        "a parameter is missing or counted twice"
    )


def test_eval_before_measures_the_untrained_model_on_the_same_examples():
    def summary(lr):
        cfg = RunConfig(**{**_TINY, "method": "full", "steps": 3, "lr": lr, "warmup": 0})
        return run(cfg, device="cpu", eval_limit=2, measure_memory=False, eval_before=True).summary

    frozen, trained = summary(1e-30), summary(1e-2)  # 1e-30: every update rounds away in fp32
    assert frozen["eval_before"] == frozen["eval"]  # no update: the same loss on the same examples
    assert trained["eval_before"] == frozen["eval_before"]
    assert trained["eval"]["loss"] != trained["eval_before"]["loss"]
