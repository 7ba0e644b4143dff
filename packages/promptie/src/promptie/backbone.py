"""The language model behind extraction: a causal LM or a seq2seq (T5-style) model, optionally with LoRA."""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Literal

import torch

from effcore.errors import ConfigError
from promptie.grammar import GrammarTokens

__all__ = ["MODELS", "Backbone", "LoraSettings", "add_lora", "load_backbone"]

MODELS = ("smollm2", "gemma3-270m")  # effcore assets; any HF folder works too (load_backbone)
Kind = Literal["causal", "seq2seq"]


@dataclass(kw_only=True, slots=True)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    top_layers: int = 0  # 0: every layer; k: only the top k decoder layers (backward stops below them)

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0 <= self.dropout < 1 or self.top_layers < 0:
            raise ConfigError(f"lora: r, alpha >= 1, 0 <= dropout < 1, top_layers >= 0 (got {self})")


class Backbone:
    """A model plus how prompts, answers and targets become tokens for it.

    Causal LMs read ``Text: S\\n`` (the prefix, encoded once per text and shared by every prompt
    through its KV cache), then ``<prompt with [k] slot markers>\\nAnswer:`` and generate the
    answers. Seq2seq models read ``S <prompt with sentinel slots>`` and generate the same grammar
    with sentinels as markers (the paper's T5 setting).
    """

    def __init__(self, model: Any, tokenizer: Any, *, kind: Kind, name: str) -> None:
        self.model, self.tokenizer, self.kind, self.name = model, tokenizer, kind, name
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"tokenizer of {name} has no end-of-sequence token")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._cache: dict[str, list[int]] = {}

    @functools.cached_property
    def _cache_arg(self) -> str:
        # transformers >= 5.2x names the KV-cache argument and output `cache` (`past_key_values`, deprecated)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"

    def with_cache(self, cache: Any) -> dict[str, Any]:
        """The keyword that passes a KV cache to this model's forward."""
        return {self._cache_arg: cache}

    def cache_of(self, out: Any) -> Any:
        """The KV cache a forward returned."""
        return getattr(out, self._cache_arg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(self._cache) < 200_000:
                self._cache[text] = ids
        return ids

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """Batch tokenisation (the span tries of long texts need thousands of spans)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            for t, ids in zip(
                missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"], strict=True
            ):
                self._cache[t] = ids
        return [self._cache[t] for t in texts]

    def marker(self, k: int) -> str:
        return f"<extra_id_{k}>" if self.kind == "seq2seq" else f"[{k}]"

    def marker_ids(self, k: int) -> list[int]:
        if self.kind == "seq2seq":
            tid = self.tokenizer.convert_tokens_to_ids(self.marker(k))
            if tid is None or tid == self.tokenizer.unk_token_id:
                raise ConfigError(f"tokenizer of {self.name} has no sentinel {self.marker(k)}")
            return [tid]
        return self.encode(" " + self.marker(k))

    def grammar_tokens(self, separator: str, null: str) -> GrammarTokens:
        return GrammarTokens(
            marker=self.marker_ids,
            sep=self.encode(" " + separator),
            null=self.encode(" " + null),
            end=[self.tokenizer.eos_token_id],
            answer=lambda text: self.encode(" " + text),
        )

    def prefix_ids(self, text: str) -> list[int]:
        """Causal LMs: the shared part (``Text: S``); BOS first when the tokenizer uses one."""
        bos = [self.tokenizer.bos_token_id] if getattr(self.tokenizer, "add_bos_token", False) else []
        return bos + self.encode(f"Text: {text}\n")

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.encode(f"{prompt}\nAnswer:")

    def source_ids(self, text: str, prompt: str) -> list[int]:
        """Seq2seq models: the encoder input."""
        return [*self.encode(f"{text} {prompt}"), self.tokenizer.eos_token_id]


def add_lora(backbone: Backbone, settings: LoraSettings) -> Backbone:
    """Wrap the model with peft LoRA adapters (on the top ``settings.top_layers`` layers if set)."""
    from peft import LoraConfig, get_peft_model

    cfg = backbone.model.config
    if backbone.kind == "seq2seq":
        targets = ["q", "k", "v", "o", "wi", "wo"]
        n_layers = cfg.num_decoder_layers
    else:
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        n_layers = cfg.num_hidden_layers
    layers = None
    if settings.top_layers:
        k = min(settings.top_layers, n_layers)
        layers = list(range(n_layers - k, n_layers))
    lcfg = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=targets, layers_to_transform=layers, bias="none")  # fmt: skip
    backbone.model = get_peft_model(backbone.model, lcfg)
    return backbone


def load_backbone(name: str, *, device: str = "auto", dtype: torch.dtype = torch.float32) -> Backbone:
    """An effcore asset (``smollm2``, ``gemma3-270m``) or a local HF folder (causal or seq2seq)."""
    from pathlib import Path

    from effcore.assets import MODEL_ASSETS, load_causal_lm, quiet_transformers
    from effcore.device import infer_device

    if name in MODEL_ASSETS:
        model, tok = load_causal_lm(name, dtype=dtype, device=device)
        return Backbone(model, tok, kind="causal", name=name)
    folder = Path(name)
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model {name!r} is neither an effcore asset nor a folder with config.json",
                          hint=f"use one of {', '.join(MODELS)} or a local HF model folder")  # fmt: skip
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    config = AutoConfig.from_pretrained(str(folder))
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    with quiet_transformers():
        model = cls.from_pretrained(str(folder), dtype=dtype)
    model.to(infer_device(device)).eval()
    tok = AutoTokenizer.from_pretrained(str(folder))
    return Backbone(model, tok, kind="seq2seq" if seq2seq else "causal", name=str(folder))
