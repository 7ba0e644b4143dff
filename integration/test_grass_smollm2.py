"""grass end to end on SmolLM2-135M-Instruct and GSM8K: GRASS and LISA train a few steps in the same
harness; GRASS streams optimizer state through the host and keeps at most two layers' state on the
device; LISA-keep's state of a deactivated layer comes back bit for bit."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def _data():
    from effcore.assets import data_dir
    from effcore.errors import DataNotFoundError

    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))


def test_grass_on_smollm2_trains_two_layers_with_streamed_state():
    from grass.config import RunConfig
    from grass.train import run

    cfg = RunConfig(method="grass", steps=4, batch=2, seq_len=160, probe_steps=2, sample_period=2,
                    update_period=2, lr=1e-4, train_limit=32)  # fmt: skip
    r = run(cfg, device="cpu", eval_limit=4)
    s = r.summary
    assert [row["active"] for row in r.rows[:2]] == ["probe", "probe"]
    assert all(len(row["active"].split(",")) == 2 for row in r.rows[2:])
    n = sum(p.numel() for p in _one_layer())  # SmolLM2's layers are all the same size
    state = 2 * 4 * n  # two fp32 moments
    assert s["optimizer_state_device_peak"] <= 2 * state, "more than two layers' state on the device"
    assert s["optimizer_state_host"] >= state
    assert s["memory"]["gradients"] == 2 * 4 * n, "only the two active layers have gradients"
    assert torch.isfinite(torch.tensor(s["eval"]["loss"]))


def _one_layer():
    from effcore.assets import load_causal_lm

    model, _ = load_causal_lm("smollm2")
    return list(model.model.layers[0].parameters())
