"""The units GRASS samples: a causal LM's decoder layers, plus the embeddings/head and the rest."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from effcore.errors import ConfigError

__all__ = ["EMBED_HEAD", "SUPPORTED_LAYOUTS", "LayerMap", "layer_map", "unwrap"]

EMBED_HEAD = "embed_head"
"""The unit holding the input embeddings, the LM head (once when tied) and every other parameter
outside the decoder layers (the final norm)."""

# attribute path of the decoder's ModuleList -> the families that use it
SUPPORTED_LAYOUTS: dict[str, str] = {
    "model.layers": "Llama, SmolLM2, Gemma-3, Mistral, Qwen2/3",
    "transformer.h": "GPT-2",
}


def unwrap(model: nn.Module) -> nn.Module:
    """The HF model inside DDP (``.module``) and peft (``.get_base_model()``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "get_base_model") and callable(model.get_base_model):
            model = model.get_base_model()
        else:
            return model


def _resolve(model: nn.Module, path: str) -> nn.ModuleList | None:
    obj: object = model
    for attr in path.split("."):
        obj = getattr(obj, attr, None)
        if obj is None:
            return None
    return obj if isinstance(obj, nn.ModuleList) else None


@dataclass(frozen=True, slots=True)
class LayerMap:
    """Where every trainable parameter of a model belongs.

    ``layers[l]`` lists the (name, parameter) pairs of decoder layer ``l``; ``embed_head`` those of
    the embeddings, the LM head and everything else outside the layers. Tied weights appear once.
    """

    layout: str
    layers: tuple[tuple[tuple[str, nn.Parameter], ...], ...]
    embed_head: tuple[tuple[str, nn.Parameter], ...]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def layer_numel(self) -> list[int]:
        """Parameters per layer (N_p in the MGN)."""
        return [sum(p.numel() for _, p in params) for params in self.layers]


def layer_map(model: nn.Module) -> LayerMap:
    """Split ``model``'s parameters into decoder layers and the embed/head unit.

    Raises :class:`ConfigError` naming the supported layouts when no decoder ModuleList is found.
    """
    base = unwrap(model)
    for layout in SUPPORTED_LAYOUTS:
        blocks = _resolve(base, layout)
        if blocks is not None and len(blocks) > 0:
            break
    else:
        known = "; ".join(f"{path} ({fams})" for path, fams in SUPPORTED_LAYOUTS.items())
        raise ConfigError(
            f"unsupported model layout: {type(base).__name__} has no decoder layer list",
            hint=f"supported layouts: {known}",
        )
    owner: dict[int, int] = {}
    for index, block in enumerate(blocks):
        for p in block.parameters():
            owner[id(p)] = index
    layers: list[list[tuple[str, nn.Parameter]]] = [[] for _ in blocks]
    rest: list[tuple[str, nn.Parameter]] = []
    for name, p in base.named_parameters():  # named_parameters lists a tied weight once
        if id(p) in owner:
            layers[owner[id(p)]].append((name, p))
        else:
            rest.append((name, p))
    return LayerMap(layout=layout, layers=tuple(tuple(params) for params in layers), embed_head=tuple(rest))
