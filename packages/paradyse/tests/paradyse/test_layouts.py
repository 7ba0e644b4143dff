"""Each strategy's tensors as effcore layouts: they round-trip and they are the model's real shards."""

from __future__ import annotations

import pytest
import torch

from effcore.layout import shard, unshard
from paradyse.config import STRATEGIES, ModelConfig
from paradyse.layouts import shared_layouts, strategy_layouts
from paradyse.model import full_weights, shard_weights

CFG = ModelConfig(hidden=64, heads=8, kv_heads=4, layers=1, ffn=128)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("p", [1, 2, 4])
def test_strategy_layouts_round_trip(strategy, p):
    for name, layout in strategy_layouts(CFG, strategy, 32, p, batch=2).items():
        t = torch.randn(layout.shape, generator=torch.Generator().manual_seed(0))
        if layout.replication_factor() > 1 and any(pl.is_partial() for pl in layout.placements):
            continue  # partial sums round-trip as sums; checked below
        assert torch.equal(unshard(shard(t, layout), layout), t), name


def test_partial_layouts_sum_back():
    layout = strategy_layouts(CFG, "megatron", 32, 4)["attn_out_partial"]
    t = torch.randn(layout.shape)
    torch.testing.assert_close(unshard(shard(t, layout), layout), t)


@pytest.mark.parametrize("p", [2, 4])
def test_the_weight_layouts_are_the_models_real_shards(p):
    full = full_weights(CFG, 0)
    layouts = shared_layouts(CFG, 32, p)
    for rank in range(p):
        real = shard_weights(full, rank, p)
        for name, w in full.items():
            assert torch.equal(shard(w, layouts[name])[(rank,)], real[name]), f"{name} on rank {rank}"


def test_every_strategy_shares_the_boundary_and_weight_layouts():
    base = shared_layouts(CFG, 64, 4)
    for k in STRATEGIES:
        lays = strategy_layouts(CFG, k, 64, 4)
        assert all(lays[name] == base[name] for name in base), k
        assert lays["x"].local_shape() == (1, 16, 64)
