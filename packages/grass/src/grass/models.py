"""The models grass fine-tunes (the bundled SmolLM2 and Gemma-3, tiny random ones for tests) and how
each method wraps them: LoRA/DoRA through peft, the layer-wise methods through ``LayerwiseTuner``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effcore.errors import ConfigError
from grass.config import RunConfig
from grass.controller import LayerwiseTuner
from grass.sampler import (
    BlockCycleSampler,
    FullSampler,
    GrassSampler,
    GrassSettings,
    LayerSampler,
    UniformSampler,
)

__all__ = ["MODELS", "MODEL_HELP", "Prepared", "load_model", "make_sampler", "prepare"]

MODELS: tuple[str, ...] = ("smollm2", "gemma3-270m")
MODEL_HELP = "'smollm2' (SmolLM2-135M-Instruct) or 'gemma3-270m' (bundled weights), or tiny:<family> (tests)."


def load_model(name: str, *, device: torch.device, seed: int = 0, tiny_layers: int = 4):
    """``(model, tokenizer)`` in train mode. ``tiny:<family>`` is a random tiny model of that family
    with SmolLM2's tokenizer (its vocabulary sized to it)."""
    from effcore.assets import load_causal_lm, load_tokenizer, quiet_transformers

    if name in MODELS:
        model, tok = load_causal_lm(name, device=device)
    elif name.startswith("tiny:"):
        from effcore.testing.tiny import tiny_model

        tok = load_tokenizer("smollm2")
        with quiet_transformers():
            model = tiny_model(name[5:], seed=seed, vocab_size=len(tok), num_hidden_layers=tiny_layers)
        model.to(device)
    else:
        raise ConfigError(f"unknown model {name!r}", hint=MODEL_HELP)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.train(), tok


def make_sampler(cfg: RunConfig, num_layers: int) -> LayerSampler:
    """The layer schedule of ``cfg.method`` over ``num_layers`` layers."""
    if cfg.method in ("grass", "static-grass"):
        settings = GrassSettings(
            gamma=cfg.gamma, probe_steps=cfg.probe_steps, sample_period=cfg.sample_period,
            update_period=cfg.update_period, tau=cfg.tau, alpha=cfg.alpha, normalize=cfg.normalize,
            adaptive=cfg.method == "grass",
        )  # fmt: skip
        return GrassSampler(num_layers, settings, seed=cfg.seed)
    if cfg.method in ("lisa", "lisa-keep"):
        return UniformSampler(num_layers, cfg.gamma, cfg.sample_period, seed=cfg.seed)
    if cfg.method == "badam":
        return BlockCycleSampler(
            num_layers, cfg.gamma, cfg.sample_period, order=cfg.badam_order, seed=cfg.seed
        )
    return FullSampler(num_layers)


@dataclass(slots=True)
class Prepared:
    """A model ready for ``cfg.method``: what runs forward (``model``, peft-wrapped for LoRA/DoRA),
    its optimizer, and the layer-wise tuner when the method is layer-wise."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    tuner: LayerwiseTuner | None


def prepare(cfg: RunConfig, model: nn.Module) -> Prepared:
    """Wrap ``model`` for ``cfg.method`` and build its optimizer (AdamW everywhere, betas 0.9/0.999)."""
    lr, wd = cfg.learning_rate, cfg.weight_decay
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if cfg.method == "full":
        return Prepared(model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd), None)
    if cfg.method in ("lora", "dora"):
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
            use_dora=cfg.method == "dora", task_type="CAUSAL_LM",
        )  # fmt: skip
        wrapped = get_peft_model(model, config)
        params = [p for p in wrapped.parameters() if p.requires_grad]
        return Prepared(wrapped, torch.optim.AdamW(params, lr=lr, weight_decay=wd), None)
    from grass.layers import layer_map

    num_layers = layer_map(model).num_layers
    sampler = make_sampler(cfg, num_layers)
    tuner = LayerwiseTuner(
        model, sampler, embed_head=cfg.embed_head, lr=lr, weight_decay=wd, offload=cfg.offload,
        on_switch=cfg.on_switch,
    )  # fmt: skip
    return Prepared(model, tuner.optimizer, tuner)
