"""Tiny random-weight HF transformers models for fast tests (dense and every supported MoE family)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from effcore.errors import ConfigError

__all__ = ["TINY_CONFIGS", "tiny_config", "tiny_model"]

_COMMON = dict(
    vocab_size=128,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=False,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
_MOE = dict(moe_intermediate_size=32, intermediate_size=96)


def _llama():
    from transformers import LlamaConfig

    return LlamaConfig(**_COMMON, intermediate_size=128)


def _gpt2():
    from transformers import GPT2Config

    # GPT-2's fused q/k/v (Conv1D) and learned positions; dropout off so runs compare exactly
    return GPT2Config(
        vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip


def _gemma3():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(**{**_COMMON, "head_dim": 16, "sliding_window": 32}, intermediate_size=128)


def _mixtral():
    from transformers import MixtralConfig

    return MixtralConfig(**_COMMON, intermediate_size=32, num_local_experts=8, num_experts_per_tok=2)


def _qwen2_moe():
    from transformers import Qwen2MoeConfig

    return Qwen2MoeConfig(
        **_COMMON, **_MOE, shared_expert_intermediate_size=48, num_experts=8, num_experts_per_tok=2
    )


def _qwen3_moe():
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(**_COMMON, **_MOE, head_dim=16, num_experts=8, num_experts_per_tok=2)


def _olmoe():
    from transformers import OlmoeConfig

    return OlmoeConfig(**_COMMON, intermediate_size=32, num_experts=8, num_experts_per_tok=2)


def _deepseek(version: int):
    from transformers import DeepseekV2Config, DeepseekV3Config

    cls = DeepseekV2Config if version == 2 else DeepseekV3Config
    # DeepSeek V2/V3 need kv heads == attention heads; layer 0 stays dense (first_k_dense_replace).
    kw = dict(
        {**_COMMON, "num_key_value_heads": 4, "num_hidden_layers": 3},
        **_MOE,
        n_routed_experts=8,
        num_experts_per_tok=2,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=2,
        topk_group=1,
        kv_lora_rank=16,
        q_lora_rank=32,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=16,
    )
    return cls(**kw)


TINY_CONFIGS: dict[str, Callable[[], object]] = {
    "llama": _llama,
    "gemma3": _gemma3,
    "gpt2": _gpt2,
    "mixtral": _mixtral,
    "qwen2_moe": _qwen2_moe,
    "qwen3_moe": _qwen3_moe,
    "olmoe": _olmoe,
    "deepseek_v2": lambda: _deepseek(2),
    "deepseek_v3": lambda: _deepseek(3),
}


def tiny_config(family: str):
    """A tiny config of ``family`` (see ``TINY_CONFIGS``): 2-3 layers, hidden 64, vocab 128."""
    if family not in TINY_CONFIGS:
        raise ConfigError(f"unknown tiny model family {family!r}", hint=f"known: {', '.join(TINY_CONFIGS)}")
    return TINY_CONFIGS[family]()


def tiny_model(
    family: str, *, seed: int = 0, dtype: torch.dtype = torch.float32, **overrides: object
) -> torch.nn.Module:
    """A seeded random-weight causal LM of ``family`` in eval mode (same seed, same weights).

    ``overrides`` set config fields first (``num_hidden_layers=4``, ``tie_word_embeddings=True``).
    """
    from transformers import AutoModelForCausalLM

    config = tiny_config(family)
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ConfigError(f"{type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()
