"""A Llama-family HF decoder on the shard layout: a training step under any plan gives transformers'
loss and gradients (world 1 in process, world 2 on gloo); unshardable models are refused by module."""

from __future__ import annotations

import pytest
import torch

from effcore.testing.distributed import launch
from paradyse.config import PlanError

PLANS = ["megatron", "ulysses", "ring", "metp", ("metp", "ring"), ("ulysses", "megatron")]


def _tiny_llama(tied: bool = True):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_attention_heads=8, num_key_value_heads=4,
                      num_hidden_layers=2, vocab_size=101, rms_norm_eps=1e-5, tie_word_embeddings=tied,
                      rope_parameters={"rope_theta": 5000.0, "rope_type": "default"})  # fmt: skip
    model = LlamaForCausalLM(cfg).float()
    with torch.no_grad():  # the norms start at 1: perturb them so that their gradients are checked too
        for name, prm in model.named_parameters():
            if "norm" in name:
                prm.add_(0.1 * torch.randn(prm.shape))
    return model


def _step_errors(rank: int, p: int, tied: bool = True, per_rank: int = 6) -> dict[str, dict[str, float]]:
    from paradyse.hf import LAYER_PARTS, load_hf
    from paradyse.weights import SHARD_DIM

    hf = _tiny_llama(tied)
    s = per_rank * p
    ids = torch.randint(0, 101, (2, s + 1), generator=torch.Generator().manual_seed(1))
    ref = hf(input_ids=ids, labels=ids).loss  # predicts ids[:, 1:s+1] from ids[:, :s]
    ref.backward()
    ref = ref.detach()
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    out = {}
    for plan in PLANS:
        lm = load_hf(hf)
        loss = lm.loss(ids[:, :s][:, sl], ids[:, 1:][:, sl], plan, total_tokens=2 * s)
        loss.backward()
        lm.finish_grads()
        total = loss.detach().clone()
        if p > 1:
            torch.distributed.all_reduce(total)

        def rel(a, b):
            return float((a - b).abs().max() / b.abs().max())

        grads = {"embed": rel(lm.embed.grad, hf.model.embed_tokens.weight.grad),
                 "norm": rel(lm.norm.grad, hf.model.norm.weight.grad)}  # fmt: skip
        if not tied:
            grads["head"] = rel(lm.head.grad, hf.lm_head.weight.grad)
        for i, (layer, blk) in enumerate(zip(hf.model.layers, lm.stack.blocks, strict=True)):
            for path, name in LAYER_PARTS.items():
                want = layer.get_submodule(path).weight.grad
                dim = SHARD_DIM[name]
                grads[f"{i}.{name}"] = rel(
                    getattr(blk, name).grad, want if dim is None else want.chunk(p, dim)[rank]
                )
        out[str(plan)] = {"loss": abs(float(total) - float(ref)) / float(ref), "grad": max(grads.values())}
    return out


def _assert(results: list[dict], p: int) -> None:
    for plan in PLANS:
        for what, tol in (("loss", 1e-6), ("grad", 1e-5)):
            worst = max(r[str(plan)][what] for r in results)
            assert worst < tol, f"plan {plan} at world {p}: relative error of the {what} = {worst:.2e}"


@pytest.mark.parametrize("tied", [True, False])
def test_a_training_step_equals_transformers_on_one_process(tied):
    _assert([_step_errors(0, 1, tied)], 1)


@pytest.mark.distributed
def test_a_training_step_under_every_plan_equals_transformers_on_two_ranks():
    _assert(launch(_step_errors, 2, timeout_s=600), 2)


def test_the_config_maps_llama_fields():
    from paradyse.hf import config_from_hf

    cfg = config_from_hf(_tiny_llama().config)
    assert (cfg.hidden, cfg.heads, cfg.kv_heads, cfg.layers, cfg.ffn) == (64, 8, 4, 2, 96)
    assert (cfg.rope_theta, cfg.eps, cfg.mlp, cfg.causal) == (5000.0, 1e-5, "swiglu", True)


def test_models_the_strategies_cannot_shard_are_refused_naming_the_module():
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    from paradyse.hf import check_shardable, config_from_hf

    small = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2,
                 num_hidden_layers=1, vocab_size=50)  # fmt: skip
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=50))
    with pytest.raises(
        PlanError, match=r"GPT2LMHeadModel cannot be sharded: .* transformer\.h\.0 \(GPT2Block\)"
    ):
        check_shardable(gpt2)
    qwen3 = Qwen3ForCausalLM(Qwen3Config(**small, head_dim=8))
    with pytest.raises(
        PlanError, match=r"model\.layers\.0\.self_attn\.k_norm \(Qwen3RMSNorm\) cannot be sharded"
    ):
        check_shardable(qwen3)
    biased = LlamaForCausalLM(LlamaConfig(**small, attention_bias=True))
    with pytest.raises(
        PlanError, match=r"model\.layers\.0\.self_attn\.q_proj \(Linear\) cannot be sharded: it has a bias"
    ):
        check_shardable(biased)
    with pytest.raises(PlanError, match="hidden_act='gelu'"):
        config_from_hf(LlamaConfig(**small, hidden_act="gelu"))
