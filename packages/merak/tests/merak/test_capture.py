"""Capture: the proxy graph computes the model, keeps the user's modules, and fails with a named node."""

from __future__ import annotations

import pytest
import torch

from effcore.testing.tiny import tiny_model
from merak.capture import CaptureError, capture, default_leaves, find_blocks


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_proxy_graph_equals_the_model_forward_and_gradients(family):
    model = tiny_model(family, num_hidden_layers=3).train()
    captured = capture(model, (2, 12))
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(0))
    ref = model(input_ids=ids).logits
    ref.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = captured.graph(ids)
    out.square().mean().backward()
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, grads[name], rtol=0, atol=0, msg=name)


def test_leaves_are_the_users_own_modules_with_costs():
    model = tiny_model("llama", num_hidden_layers=2)
    captured = capture(model, (1, 8))
    called = {str(n.target) for n in captured.graph.graph.nodes if n.op == "call_module"}
    for leaf in captured.leaves:
        assert f"hf.{leaf}" in called
        assert captured.graph.get_submodule(f"hf.{leaf}") is model.get_submodule(leaf)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    # every parameter once (tied or not), plus the buffers the graph reads (rotary inv_freq)
    assert params < sum(r.param_bytes for r in captured.nodes) <= params + buffers
    assert {r.name: r.flops for r in captured.nodes}["hf_lm_head"] == 2 * 8 * 64 * 128


def test_default_leaves_follow_the_block_list():
    llama, gpt2 = tiny_model("llama"), tiny_model("gpt2")
    assert find_blocks(llama) == "model.layers" and find_blocks(gpt2) == "transformer.h"
    assert default_leaves(llama) == [
        "model.layers.0.self_attn", "model.layers.0.mlp", "model.layers.1.self_attn", "model.layers.1.mlp",
        "model.embed_tokens", "model.norm", "lm_head",
    ]  # fmt: skip
    assert default_leaves(gpt2)[-4:] == ["transformer.wte", "transformer.wpe", "transformer.ln_f", "lm_head"]


def test_a_meta_model_captures_without_weights():
    from transformers import AutoModelForCausalLM

    from effcore.testing.tiny import tiny_config

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(tiny_config("llama"))
    captured = capture(model, (4, 32))
    assert sum(r.flops for r in captured.nodes) > 0
    assert all(p.is_meta for p in model.parameters())


def test_an_uncapturable_leaf_is_an_error_naming_the_node():
    model = tiny_model("llama")
    with pytest.raises(CaptureError, match=r"While executing %"):
        capture(model, (1, 8), leaves=["model.layers.0.input_layernorm"])


def test_bad_leaves_and_shapes_are_errors():
    model = tiny_model("llama")
    with pytest.raises(CaptureError, match=r"no module 'model\.nope'"):
        capture(model, (1, 8), leaves=["model.nope"])
    with pytest.raises(CaptureError, match="positive"):
        capture(model, (0, 8))
    with pytest.raises(CaptureError, match="no list of repeated blocks"):
        capture(torch.nn.Linear(2, 2), (1, 2))
