"""Adapters: how allocmoe finds and drives the MoE blocks of a model.

Six HF transformers families are built in (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V2,
DeepSeek-V3). They share one contract (transformers 5): ``block.gate(hidden[T, H])`` returns
``(router_logits, top_k_weights, top_k_index)`` and ``block.experts(hidden, index, weights)`` runs the
routed experts, whose weights are stored as ``gate_up_proj[E, 2I, H]`` and ``down_proj[E, H, I]``.
Shared experts (Qwen2-MoE, DeepSeek) live beside ``block.experts`` and are never budgeted.

A custom MoE block is supported by subclassing :class:`MoEAdapter` (override ``matches`` and whatever
differs: where the router and experts live, the logits, the score function, the candidate mask and the
weight normalisation) and calling :func:`register_adapter`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError

__all__ = [
    "ADAPTERS",
    "MoEAdapter",
    "MoELayer",
    "RouterSpec",
    "find_moe_layers",
    "register_adapter",
]


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """How a router turns logits into expert weights.

    ``score``: softmax or sigmoid of the logits; ``normalize``: divide the kept weights by their sum
    (Mixtral; ``norm_topk_prob``); ``scaling``: ``routed_scaling_factor``; ``out_dtype``: the dtype the
    original router returns its weights in (``None``: float32).
    """

    score: Literal["softmax", "sigmoid"]
    normalize: bool
    scaling: float = 1.0
    out_dtype: torch.dtype | None = None


class MoEAdapter:
    """Drive one kind of MoE block. Subclass and override for a custom block.

    The defaults fit the HF transformers 5 families: router at ``block.gate`` (a linear ``weight[E, H]``
    and ``top_k``), experts at ``block.experts``.
    """

    family: str = "custom"
    block_classes: tuple[str, ...] = ()

    def matches(self, module: torch.nn.Module) -> bool:
        return type(module).__name__ in self.block_classes

    def router(self, block: torch.nn.Module) -> torch.nn.Module:
        return block.gate

    def experts(self, block: torch.nn.Module) -> torch.nn.Module:
        return block.experts

    def num_experts(self, block: torch.nn.Module) -> int:
        return int(self.router(block).weight.shape[0])

    def k_orig(self, block: torch.nn.Module) -> int:
        return int(self.router(block).top_k)

    def logits(self, block: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Router logits ``[T, E]`` for flattened ``hidden[T, H]``."""
        return F.linear(hidden, self.router(block).weight)

    def spec(self, block: torch.nn.Module) -> RouterSpec:
        raise NotImplementedError

    def candidates(
        self, block: torch.nn.Module, logits: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(choice_bias[E] | None, candidate_mask[T, E] | None)``: what ranking uses besides the scores."""
        return None, None


class _SoftmaxTopK(MoEAdapter):
    """Softmax over all experts, top-k, optional renormalisation (``norm_topk_prob``)."""

    def spec(self, block):
        gate = self.router(block)
        return RouterSpec("softmax", bool(getattr(gate, "norm_topk_prob", False)), 1.0, gate.weight.dtype)


class MixtralAdapter(_SoftmaxTopK):
    family = "mixtral"
    block_classes = ("MixtralSparseMoeBlock",)

    def spec(self, block):
        return RouterSpec("softmax", True, 1.0, None)  # Mixtral always renormalises, returns float32


class Qwen2MoeAdapter(_SoftmaxTopK):
    family = "qwen2_moe"
    block_classes = ("Qwen2MoeSparseMoeBlock",)


class Qwen3MoeAdapter(_SoftmaxTopK):
    family = "qwen3_moe"
    block_classes = ("Qwen3MoeSparseMoeBlock",)


class OlmoeAdapter(_SoftmaxTopK):
    family = "olmoe"
    block_classes = ("OlmoeSparseMoeBlock",)


def _group_mask(group_scores: torch.Tensor, topk_group: int, num_experts: int) -> torch.Tensor:
    n_group = group_scores.shape[-1]
    idx = torch.topk(group_scores, k=topk_group, dim=-1, sorted=False)[1]
    mask = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, idx, True)
    return mask.unsqueeze(-1).expand(-1, n_group, num_experts // n_group).reshape(-1, num_experts)


class DeepseekV2Adapter(MoEAdapter):
    """DeepSeek-V2: fp32 softmax, greedy or group-limited greedy top-k, ``routed_scaling_factor``."""

    family = "deepseek_v2"
    block_classes = ("DeepseekV2Moe",)

    def logits(self, block, hidden):
        return F.linear(hidden.float(), self.router(block).weight.float())

    def spec(self, block):
        return RouterSpec("softmax", False, float(self.router(block).routed_scaling_factor), None)

    def candidates(self, block, logits):
        gate = self.router(block)
        if gate.topk_method != "group_limited_greedy":
            return None, None
        scores = logits.float().softmax(-1)
        e = scores.shape[-1]
        group_scores = scores.view(-1, gate.num_group, e // gate.num_group).max(dim=-1).values
        return None, _group_mask(group_scores, gate.topk_group, e)


class DeepseekV3Adapter(MoEAdapter):
    """DeepSeek-V3: fp32 sigmoid scores, ranking by score + ``e_score_correction_bias`` within the
    ``topk_group`` best groups (group score = sum of its top-2), weights are the unbiased scores,
    renormalised when ``norm_topk_prob`` and scaled by ``routed_scaling_factor``.

    Alloc-T pools extra slots by the unbiased sigmoid score (the weight the expert's output gets); the
    paper leaves the score for biased gates open [UNVERIFIED].
    """

    family = "deepseek_v3"
    block_classes = ("DeepseekV3MoE",)

    def logits(self, block, hidden):
        return F.linear(hidden.float(), self.router(block).weight.float())

    def spec(self, block):
        gate = self.router(block)
        return RouterSpec("sigmoid", bool(gate.norm_topk_prob), float(gate.routed_scaling_factor), None)

    def candidates(self, block, logits):
        gate = self.router(block)
        scores = logits.float().sigmoid()
        bias = gate.e_score_correction_bias.float()
        e = scores.shape[-1]
        choice = scores + bias
        group_scores = choice.view(-1, gate.num_group, e // gate.num_group).topk(2, dim=-1)[0].sum(dim=-1)
        return bias, _group_mask(group_scores, gate.topk_group, e)


ADAPTERS: list[MoEAdapter] = [
    MixtralAdapter(),
    Qwen2MoeAdapter(),
    Qwen3MoeAdapter(),
    OlmoeAdapter(),
    DeepseekV2Adapter(),
    DeepseekV3Adapter(),
]


def register_adapter(adapter: MoEAdapter, *, first: bool = True) -> None:
    """Make ``adapter`` known to :func:`find_moe_layers` (checked before the built-ins by default)."""
    if first:
        ADAPTERS.insert(0, adapter)
    else:
        ADAPTERS.append(adapter)


@dataclass(slots=True)
class MoELayer:
    """One MoE block of a model: its position among MoE layers, decoder layer index and adapter."""

    index: int
    decoder_index: int | None
    name: str
    block: torch.nn.Module
    adapter: MoEAdapter

    @property
    def num_experts(self) -> int:
        return self.adapter.num_experts(self.block)


def _decoder_index(name: str) -> int | None:
    parts = name.split(".")
    for i, p in enumerate(parts[:-1]):
        if p == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def find_moe_layers(model: torch.nn.Module) -> list[MoELayer]:
    """Every MoE block of ``model`` in module order; a clear error for a model without one."""
    found: list[MoELayer] = []
    for name, module in model.named_modules():
        for adapter in ADAPTERS:
            if adapter.matches(module):
                found.append(MoELayer(len(found), _decoder_index(name), name, module, adapter))
                break
    if not found:
        families = ", ".join(a.family for a in ADAPTERS)
        raise ConfigError(
            f"{type(model).__name__} has no MoE block allocmoe can drive",
            hint=f"supported families: {families}; for a custom block subclass allocmoe.MoEAdapter "
            "and call allocmoe.register_adapter",
        )
    return found


def model_k_orig(model: torch.nn.Module, layers: list[MoELayer] | None = None) -> int:
    """The routed top-k of the model (from its config when present, else from the first router)."""
    cfg = getattr(model, "config", None)
    k = getattr(getattr(cfg, "get_text_config", lambda: cfg)(), "num_experts_per_tok", None)
    if k is None:
        layers = layers or find_moe_layers(model)
        k = layers[0].adapter.k_orig(layers[0].block)
    return int(k)
