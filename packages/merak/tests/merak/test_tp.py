"""The tensor-parallel plan found in the graph is Megatron's (HF's own plan where it has one)."""

from __future__ import annotations

from fnmatch import fnmatch

import pytest
import torch

from effcore.testing.tiny import tiny_model
from merak.capture import capture
from merak.tp import derive_tp_plan, fused_order


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_derived_plan_equals_hf_base_model_tp_plan(family):
    model = tiny_model(family)
    plans, skipped = derive_tp_plan(capture(model, (1, 8)))
    assert not skipped
    hf = {k: v for k, v in model.config.base_model_tp_plan.items() if v in ("colwise", "rowwise")}
    ours = {lp.module.removeprefix("model."): lp.style for plan in plans.values() for lp in plan}
    for name, style in ours.items():
        assert any(fnmatch(name, pattern) and hf[pattern] == style for pattern in hf), (name, style)
    assert len(ours) == 7 * model.config.num_hidden_layers


def test_gpt2_fused_qkv_is_found_with_three_chunks():
    plans, _ = derive_tp_plan(capture(tiny_model("gpt2"), (1, 8)))
    attn = {lp.module.split(".")[-1]: lp for lp in plans["transformer.h.0.attn"]}
    assert (attn["c_attn"].style, attn["c_attn"].kind, attn["c_attn"].chunks) == ("colwise", "conv1d", 3)
    assert (attn["c_proj"].style, attn["c_proj"].chunks) == ("rowwise", 1)


def test_moe_mlps_are_left_whole_with_a_reason():
    plans, skipped = derive_tp_plan(capture(tiny_model("qwen2_moe"), (1, 8)))
    assert "model.layers.0.self_attn" in plans and "model.layers.0.mlp" in skipped


def test_fused_order_gives_each_rank_its_slice_of_every_chunk():
    order = fused_order(12, 3, 2)  # chunks q|k|v of 4, two ranks
    assert order.tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    assert sorted(order.tolist()) == list(range(12))
    assert torch.equal(fused_order(8, 1, 1), torch.arange(8))
