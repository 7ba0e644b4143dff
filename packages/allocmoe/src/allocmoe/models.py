"""Load the model a command or benchmark names: the built SmolLM2-MoE, an HF checkpoint, or a test model.

A model spec is one of

- ``smollm2-moe`` or ``smollm2-moe:<recipe>``: the SmolLM2-MoE built by ``allocmoe build-model`` with
  that recipe (``full`` by default, ``ci`` the reduced one; see :data:`allocmoe.build.RECIPES`);
- a folder holding an HF checkpoint of a MoE family allocmoe drives;
- ``tiny:<family>``: random tiny weights (smoke tests; no tokenizer, so random tokens);
- ``shape:<name>``: random weights in a real model's MoE proportions (:data:`SHAPES`; latency only).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effcore.errors import ConfigError

__all__ = ["BUILT", "SHAPES", "LoadedModel", "load_model", "moe_shape", "shape_model"]

BUILT = "smollm2-moe"
"""The spec prefix of the SmolLM2-MoE that ``allocmoe build-model`` builds."""

# Random-weight models with the MoE proportions of real ones, for speed only (`bench -m shape:<name>`):
# DeepSeek-V2-Lite's MoE layer (hidden 2048, 64 routed experts of width 1408, top-6, 2 shared experts,
# no renormalisation) on Qwen2-MoE's block, with MHA attention in place of MLA and a small vocabulary so
# the MoE layers dominate as they do in the 27-layer original.
SHAPES: dict[str, dict[str, Any]] = {
    "dsv2lite": dict(
        hidden_size=2048,
        num_attention_heads=16,
        num_key_value_heads=16,
        moe_intermediate_size=1408,
        num_experts=64,
        num_experts_per_tok=6,
        shared_expert_intermediate_size=2816,
        intermediate_size=10944,
        norm_topk_prob=False,
        vocab_size=4096,
        max_position_embeddings=4096,
    ),
}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model in eval mode on its device, its tokenizer (None: a random test model) and its spec."""

    model: torch.nn.Module
    tokenizer: Any
    name: str

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def shape_model(name: str, layers: int = 2) -> torch.nn.Module:
    """A seeded random Qwen2-MoE with the MoE proportions of :data:`SHAPES` ``[name]``."""
    from transformers import AutoModelForCausalLM, Qwen2MoeConfig

    if name not in SHAPES:
        raise ConfigError(f"unknown model shape {name!r}", hint=f"known: {', '.join(SHAPES)}")
    cfg = Qwen2MoeConfig(**SHAPES[name], num_hidden_layers=layers)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


def _checkpoint(path: Path) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from effcore.assets import quiet_transformers

    config = path / "config.json"
    if not config.is_file():
        raise ConfigError(f"{path} has no config.json", hint="pass a folder saved by save_pretrained")
    try:
        json.loads(config.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{config} is not valid JSON ({err})", hint="re-save the checkpoint") from None
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"cannot load the checkpoint in {path}: {first}",
            hint="pass a folder with an HF causal-LM MoE checkpoint (config.json and weights)",
        ) from None
    tok = AutoTokenizer.from_pretrained(str(path)) if (path / "tokenizer_config.json").is_file() else None
    return model, tok


def load_model(spec: str, *, device: str | torch.device | None = None) -> LoadedModel:
    """Load the model named by ``spec`` (see the module docstring) onto ``device`` (None or ``"auto"``:
    the first CUDA device when present, else the CPU), in eval mode."""
    from transformers.utils import logging as hf_logging

    from effcore.device import infer_device

    dev = infer_device(device)
    hf_logging.disable_progress_bar()  # the commands draw their own progress bars
    tok = None
    if spec.startswith("shape:"):
        model = shape_model(spec.split(":", 1)[1])
    elif spec.startswith("tiny:"):
        from effcore.testing.tiny import tiny_model

        model = tiny_model(spec.split(":", 1)[1])
    elif spec == BUILT or spec.startswith(BUILT + ":"):
        from allocmoe.build import load_moe

        recipe = spec.split(":", 1)[1] if ":" in spec else "full"
        model, tok = load_moe(recipe_name=recipe)
    elif Path(spec).is_dir():
        model, tok = _checkpoint(Path(spec))
    else:
        raise ConfigError(
            f"--model {spec!r} is neither '{BUILT}[:recipe]', tiny:<family>, shape:<name>, nor a checkpoint folder",
            hint="build the default model with `allocmoe build-model` or pass an HF MoE checkpoint folder",
        )
    return LoadedModel(model.to(dev).eval(), tok, spec)


def moe_shape(model: torch.nn.Module) -> tuple[int, int]:
    """``(L, K_orig)``: the number of MoE layers allocmoe drives in ``model`` and their routed top-k."""
    from allocmoe.adapters import find_moe_layers, model_k_orig

    layers = find_moe_layers(model)
    return len(layers), model_k_orig(model, layers)
