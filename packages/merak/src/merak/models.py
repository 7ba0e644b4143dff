"""The models merak runs: the bundled offline LMs, HF folders and tiny random ones, with or without weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from effcore.errors import ConfigError

__all__ = ["MODEL_HELP", "load_model"]

_ASSETS = ("smollm2", "gemma3-270m")
MODEL_HELP = (
    "'smollm2' or 'gemma3-270m' (the bundled pretrained weights), an HF model folder, or "
    "tiny:<family> (random tiny weights: llama, gpt2, gemma3, ...)."
)


def _config(spec: str):
    from transformers import AutoConfig

    from effcore.assets import prepare_model
    from effcore.testing.tiny import tiny_config

    if spec in _ASSETS:
        return AutoConfig.from_pretrained(prepare_model(spec))
    if spec.startswith("tiny:"):
        return tiny_config(spec[len("tiny:") :])
    folder = Path(spec)
    if not (folder / "config.json").is_file():
        raise ConfigError(
            f"--model {spec!r} is not a bundled model, tiny:<family>, nor a folder with config.json",
            hint=MODEL_HELP,
        )
    try:
        return AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{folder / 'config.json'} is not a valid HF config: {err}") from None


def load_model(
    spec: str, *, weights: bool = True, device: str | torch.device = "cpu", seed: int = 0
) -> nn.Module:
    """``spec``'s causal LM in train mode. ``weights=False`` builds it on the meta device: no memory,
    enough to capture, partition and simulate a model of any size."""
    from transformers import AutoModelForCausalLM

    from effcore.assets import quiet_transformers

    config = _config(spec)
    if not weights:
        with torch.device("meta"), quiet_transformers():
            return AutoModelForCausalLM.from_config(config)
    if spec in _ASSETS or not spec.startswith("tiny:"):
        from effcore.assets import prepare_model

        folder = prepare_model(spec) if spec in _ASSETS else Path(spec)
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config)
    return model.to(device).train()
