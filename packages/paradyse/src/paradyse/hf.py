"""Llama-family HF decoders (SmolLM2, Llama) on the shard layout: check, convert the config, load the weights.

A decoder layer is shardable when it is exactly what :class:`paradyse.model.ParallelBlock` computes:
``input_layernorm`` and ``post_attention_layernorm`` (RMSNorm weights), ``self_attn.{q,k,v,o}_proj``
and ``mlp.{gate,up,down}_proj`` without biases, a SiLU-gated MLP and default RoPE. Anything else (a
GPT-2 block, Qwen3's q/k norms, biases) is refused with the module that does not fit. No transformers
import is needed here: the model is read through its modules.

:func:`load_hf` gives each rank a :class:`paradyse.train.ParadyseLM` holding its shards of every layer
(``gate -> w1``, ``up -> w3``, ``down -> w2``) and the replicated embedding, final norm and head. It
reads the weights from the given (full) model, so each rank holds the HF model while loading; per-shard
initialisation (:mod:`paradyse.weights`) is what never builds a full model.
"""

from __future__ import annotations

import torch
from torch import nn

from paradyse.config import ModelConfig, PlanError
from paradyse.weights import SHARD_DIM

__all__ = ["LAYER_PARTS", "check_shardable", "config_from_hf", "load_hf"]

LAYER_PARTS = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "wq",
    "self_attn.k_proj": "wk",
    "self_attn.v_proj": "wv",
    "self_attn.o_proj": "wo",
    "post_attention_layernorm": "mlp_norm",
    "mlp.gate_proj": "w1",
    "mlp.down_proj": "w2",
    "mlp.up_proj": "w3",
}
"""Each shardable module of a decoder layer and the block weight it becomes."""

_HINT = (
    "paradyse shards Llama-family decoder layers: RMSNorms, self_attn.{q,k,v,o}_proj and "
    "mlp.{gate,up,down}_proj without biases"
)


def _layers(model: nn.Module) -> nn.ModuleList:
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers):
        return layers
    found = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)), None)
    where = f"; its layers are {found[0]}.0 ({type(found[1][0]).__name__})" if found else ""
    raise PlanError(f"{type(model).__name__} cannot be sharded: it has no decoder layers at model.layers{where}",
                    hint=_HINT)  # fmt: skip


def check_shardable(model: nn.Module) -> None:
    """Raise :class:`PlanError` naming the first module of ``model`` that the strategies cannot shard."""
    for i, layer in enumerate(_layers(model)):
        prefix = f"model.layers.{i}"
        for path in LAYER_PARTS:
            try:
                mod = layer.get_submodule(path)
            except AttributeError:
                raise PlanError(f"{prefix} ({type(layer).__name__}) cannot be sharded: it has no {path}",
                                hint=_HINT) from None  # fmt: skip
            weight = getattr(mod, "weight", None)
            bias = getattr(mod, "bias", None)
            linear = path.endswith("_proj")
            if (
                not isinstance(weight, torch.Tensor)
                or weight.ndim != (2 if linear else 1)
                or bias is not None
            ):
                what = (
                    "has a bias"
                    if bias is not None
                    else "is not a weight-only " + ("linear" if linear else "norm")
                )
                raise PlanError(
                    f"{prefix}.{path} ({type(mod).__name__}) cannot be sharded: it {what}", hint=_HINT
                )
        known = {f"{path}.weight" for path in LAYER_PARTS}
        extra = sorted(n for n, _ in layer.named_parameters() if n not in known)
        if extra:
            owner = extra[0].rsplit(".", 1)[0]
            raise PlanError(
                f"{prefix}.{owner} ({type(layer.get_submodule(owner)).__name__}) cannot be sharded: "
                "the strategies have no place for its parameters",
                hint=_HINT,
            )


def config_from_hf(hf_config, *, name: str = "hf", dtype: str = "float32") -> ModelConfig:
    """The :class:`ModelConfig` of a Llama-family HF config (SiLU-gated MLP, default RoPE, no biases)."""
    act = getattr(hf_config, "hidden_act", None)
    if act != "silu":
        raise PlanError(f"hidden_act={act!r}: the swiglu MLP is SiLU-gated", hint=_HINT)
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf_config, flag, False):
            raise PlanError(f"{flag}=True: the strategies shard weight-only projections", hint=_HINT)
    rope = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if rope.get("rope_type", "default") != "default" or theta is None:
        raise PlanError(f"RoPE {rope or 'without a theta'}: only the default (unscaled) RoPE is implemented")
    h, heads = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or h // heads
    if head_dim * heads != h:
        raise PlanError(
            f"head_dim={head_dim} x {heads} heads != hidden_size={h}: the blocks need equal widths"
        )
    return ModelConfig(
        name=name, hidden=h, heads=heads, kv_heads=hf_config.num_key_value_heads or heads,
        layers=hf_config.num_hidden_layers, ffn=hf_config.intermediate_size, causal=True,
        rope_theta=float(theta), eps=float(hf_config.rms_norm_eps), mlp="swiglu", dtype=dtype,
    )  # fmt: skip


@torch.no_grad()
def load_hf(model: nn.Module, *, group=None, device=None, name: str = "hf"):
    """This rank's :class:`paradyse.train.ParadyseLM` with ``model``'s weights in the shard layout."""
    from paradyse.train import ParadyseLM

    check_shardable(model)
    cfg = config_from_hf(model.config, name=name)
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    tied = head is embed or bool(getattr(model.config, "tie_word_embeddings", False))
    lm = ParadyseLM(cfg, group=group, device=device, vocab=embed.shape[0], tied=tied)
    lm.embed.copy_(embed)
    if not tied:
        lm.head.copy_(head)
    lm.norm.copy_(model.model.norm.weight)
    rank, p = lm.stack.rank, lm.stack.p
    for layer, blk in zip(_layers(model), lm.stack.blocks, strict=True):
        for path, weight in LAYER_PARTS.items():
            full = layer.get_submodule(path).weight
            dim = SHARD_DIM[weight]
            getattr(blk, weight).copy_(full if dim is None else full.chunk(p, dim)[rank])
    return lm
