"""Budgets applied to real HF transformers MoE models (tiny random-weight configs of six families)."""

from __future__ import annotations

import pytest
import torch

from allocmoe.adapters import find_moe_layers
from allocmoe.budget import ActivationBudget, ThresholdPolicy
from allocmoe.runtime import apply_budget, budgeted
from effcore.errors import ConfigError
from effcore.testing.tiny import tiny_model

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3"]


@pytest.fixture(scope="module")
def models():
    out = {}
    for fam in FAMILIES:
        m = tiny_model(fam)
        m.set_experts_implementation("eager")
        out[fam] = m
    return out


def _ids(seed=0, shape=(2, 12)):
    return torch.randint(3, 128, shape, generator=torch.Generator().manual_seed(seed))


def _shape(m):
    layers = find_moe_layers(m)
    return len(layers), m.config.num_experts_per_tok


@pytest.mark.parametrize("engine", ["hf", "allocmoe"])
@pytest.mark.parametrize("family", FAMILIES)
def test_full_budget_equals_the_original_model(models, family, engine):
    m = models[family]
    ids = _ids()
    with torch.inference_mode():
        ref = m(input_ids=ids).logits
        L, K = _shape(m)
        with budgeted(m, ActivationBudget.full_budget(L, K), engine=engine) as stats:
            out = m(input_ids=ids).logits
        after = m(input_ids=ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(after, ref)  # everything restored
    assert stats.activations_per_token == pytest.approx(L * K)


@pytest.mark.parametrize("family", FAMILIES)
def test_engines_agree_under_a_cut_budget(models, family):
    m = models[family]
    L, K = _shape(m)
    budget = ActivationBudget.uniform(L, K, 1, k_base=0)  # pooled: tokens get 0..K experts
    ids = _ids(1)
    with torch.inference_mode():
        with budgeted(m, budget, engine="hf") as s_hf:
            a = m(input_ids=ids).logits
        with budgeted(m, budget, engine="allocmoe") as s_am:
            b = m(input_ids=ids).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert s_hf.activations_per_token == s_am.activations_per_token == pytest.approx(L * 1)


def test_uniform_top_k_equals_lowering_the_routers_top_k(models):
    # Uniform top-k must be exactly what the model does when its routers' top_k is lowered.
    m = models["qwen2_moe"]
    L, K = _shape(m)
    ids = _ids(2)
    with torch.inference_mode():
        with budgeted(m, ActivationBudget.uniform(L, K, 1), engine="hf"):
            ours = m(input_ids=ids).logits
        gates = [lay.block.gate for lay in find_moe_layers(m)]
        for g in gates:
            g.top_k = 1
        try:
            ref = m(input_ids=ids).logits
        finally:
            for g in gates:
                g.top_k = K
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_spent_budget_never_exceeds_the_budget(models):
    m = models["olmoe"]
    _L, K = _shape(m)
    budget = ActivationBudget((1, 2), K, k_base=1)
    with torch.inference_mode(), budgeted(m, budget) as stats:
        m(input_ids=_ids(3, (3, 9)))
    per_layer = [r["experts_per_token"] for r in stats.rows()]
    assert per_layer == pytest.approx([1.0, 2.0])


def test_sequence_scope_is_batch_invariant_and_forward_scope_is_not(models):
    m = models["mixtral"]
    L, K = _shape(m)
    a, b, c = _ids(4, (1, 10)), _ids(5, (1, 10)), _ids(6, (1, 10))

    def first(scope):
        budget = ActivationBudget.uniform(L, K, 1, k_base=0, scope=scope)
        with torch.inference_mode(), budgeted(m, budget):
            x = m(input_ids=torch.cat([a, b])).logits[0]
            y = m(input_ids=torch.cat([a, c])).logits[0]
        return x, y

    x, y = first("sequence")
    torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-6)
    x, y = first("forward")
    assert not torch.allclose(x, y)


def test_padding_takes_no_budget(models):
    m = models["qwen3_moe"]
    L, K = _shape(m)
    ids = _ids(7, (2, 8))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    budget = ActivationBudget.uniform(L, K, 1, k_base=1)
    with torch.inference_mode(), budgeted(m, budget) as stats:
        m(input_ids=ids, attention_mask=mask)
    assert all(s.tokens == 13 for s in stats.layers)
    assert stats.activations_per_token == pytest.approx(L * 1)


def _kept_by_rule(logits: torch.Tensor, k: int, kind: str, value: float) -> int:
    """The slots a threshold rule keeps, from router logits alone (softmax gate; rank 0 always kept)."""
    top = logits.float().softmax(-1).topk(k, dim=-1).values
    if kind == "naee":
        keep = top >= value * top[:, :1]
    else:  # top_p: the mass of the better ranks has not reached p yet
        keep = torch.cat([torch.zeros_like(top[:, :1]), top.cumsum(-1)[:, :-1]], dim=-1) < value
    keep[:, 0] = True
    return int(keep.sum())


@pytest.mark.parametrize(("kind", "value"), [("naee", 0.9), ("naee", 0.95), ("top_p", 0.15), ("top_p", 0.16)])
def test_threshold_policies_keep_exactly_the_slots_their_rule_keeps(models, kind, value):
    m = models["mixtral"]
    L, K = _shape(m)
    gates = [lay.block.gate for lay in find_moe_layers(m)]
    seen: list[torch.Tensor] = []
    hooks = [g.register_forward_hook(lambda _m, _a, out: seen.append(out[0].detach())) for g in gates]
    try:
        with torch.inference_mode(), budgeted(m, ThresholdPolicy(kind, value, K)) as stats:
            m(input_ids=_ids(8, (3, 16)))
    finally:
        for h in hooks:
            h.remove()
    tokens = 3 * 16
    want = [_kept_by_rule(lg, K, kind, value) / tokens for lg in seen]
    assert [r["experts_per_token"] for r in stats.rows()] == pytest.approx(want, abs=1e-12)
    assert L < sum(want) < L * K, f"{kind}={value} keeps all or nothing here: the check would not bite"


def test_threshold_policies_at_their_extremes(models):
    m = models["deepseek_v2"]
    L, K = _shape(m)
    for pol, want in [
        (ThresholdPolicy("top_p", 0.0, K), L),
        (ThresholdPolicy("top_p", 1.0, K), L * K),
        (ThresholdPolicy("naee", 0.0, K), L * K),
    ]:
        with torch.inference_mode(), budgeted(m, pol) as stats:
            m(input_ids=_ids(8))
        assert stats.activations_per_token == pytest.approx(want), pol


def test_budget_restored_after_an_exception(models):
    m = models["mixtral"]
    L, K = _shape(m)
    gate = find_moe_layers(m)[0].block.gate
    with pytest.raises(RuntimeError), budgeted(m, ActivationBudget.uniform(L, K, 1)):
        raise RuntimeError("boom")
    assert "forward" not in gate.__dict__


def test_bad_inputs_are_clear_errors(models):
    m = models["mixtral"]
    L, K = _shape(m)
    with pytest.raises(ConfigError, match=f"has {L + 1} per-layer values but the model has {L} MoE layers"):
        apply_budget(m, ActivationBudget.uniform(L + 1, K, 1))
    with pytest.raises(ConfigError, match="k_orig=3"):
        apply_budget(m, ActivationBudget.uniform(L, 3, 1))
    with pytest.raises(ConfigError, match="no MoE block allocmoe can drive"):
        apply_budget(tiny_model("llama"), ActivationBudget.uniform(2, 2, 1))


def test_generate_under_a_budget(models):
    m = models["qwen2_moe"]
    L, K = _shape(m)
    ids = _ids(9, (2, 5))
    with torch.inference_mode(), budgeted(m, ActivationBudget.uniform(L, K, 1, k_base=1)) as stats:
        out = m.generate(input_ids=ids, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 9)
    assert stats.activations_per_token == pytest.approx(L * 1)


def test_non_swiglu_experts_need_the_hf_engine():
    m = tiny_model("olmoe")
    m.set_experts_implementation("eager")
    L, K = _shape(m)
    for lay in find_moe_layers(m):
        lay.block.experts.act_fn = torch.nn.GELU()
    with pytest.raises(ConfigError, match="engine='hf'"):
        apply_budget(m, ActivationBudget.full_budget(L, K))
    ids = _ids(10)
    with torch.inference_mode():
        ref = m(input_ids=ids).logits
        with budgeted(m, ActivationBudget.full_budget(L, K), engine="hf"):
            out = m(input_ids=ids).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
