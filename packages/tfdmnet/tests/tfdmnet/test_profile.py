"""The per-block profile names every block and its core op, and its categories add up to the rows."""

from __future__ import annotations

import pytest
import torch

from tfdmnet.models import build_model
from tfdmnet.profile import block_rows, category_totals, profile_network


@pytest.mark.parametrize("train", [False, True])
def test_profile_covers_every_block_and_the_categories_add_up(train):
    model = build_model("vgg16-mixture", width=0.125).set_fused(False)
    rows = profile_network(model, torch.randn(2, 3, 32, 32), train=train, warmup=0, repeats=1)
    names = [r["module"] for r in rows]
    assert names == [n for n, _ in block_rows(model)] + ["other"]
    cats = {r["module"]: r["category"] for r in rows}
    assert cats["blocks.eml8.0"] == "mixing (EML)" and cats["blocks.eml8.1"] == "complex BN"
    assert cats["blocks.to_freq1"] == "fft in" and cats["blocks.pool4"].startswith("freq pool")
    assert cats["blocks.conv1.0"] == "conv2d" and cats["blocks.conv1"] == "conv rest"
    assert all((r["backward_ms"] is not None) == train for r in rows)
    totals = category_totals(rows)
    assert sum(t["forward_ms"] for t in totals.values()) == pytest.approx(sum(r["forward_ms"] for r in rows))
    assert sum(t["share"] for t in totals.values()) == pytest.approx(1.0, abs=1e-3)


def test_fused_blocks_leave_their_tail_to_the_block_row():
    model = build_model("lenet-tfdmnet")
    rows = {r["module"]: r for r in profile_network(model, torch.randn(4, 1, 28, 28), train=True, repeats=1)}
    assert rows["blocks.eml2.0"]["calls"] == 1  # the EML runs as a module
    assert rows["blocks.eml2.1"]["calls"] == 0  # BN, LeakyReLU and dropout run fused inside the block
    assert rows["blocks.eml2"]["category"] == "eml rest"
