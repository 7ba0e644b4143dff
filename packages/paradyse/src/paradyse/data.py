"""A dynamic-length training stream: real text cut into sequences whose lengths follow a distribution.

Text is byte-tokenised (vocabulary 256: no tokenizer to download, every corpus works). Lengths come
from one of the distributions below, rounded up to a multiple of ``multiple`` (the parallel degree
times any divisibility the strategies need) and clipped to ``[min_len, max_len]``:

- ``longtail`` (default): log-normal, median ``median``, shape ``sigma`` = 1.0 (most sequences short,
  a heavy tail of long ones, the shape of document lengths in web and code corpora);
- ``uniform``: uniform on ``[min_len, max_len]``;
- ``bimodal``: 80 % around ``median``, 20 % near ``max_len``;
- ``fixed``: always ``max_len``.

Every sequence is a contiguous window of the corpus (one more token than its length, for the shifted
targets), taken at a seeded position: the stream is deterministic and identical on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from effcore.errors import ConfigError

__all__ = ["DISTRIBUTIONS", "LengthSampler", "TextStream", "load_corpus"]

DISTRIBUTIONS = ("longtail", "uniform", "bimodal", "fixed")


@dataclass(kw_only=True, slots=True)
class LengthSampler:
    """Seeded sequence lengths: a multiple of ``multiple`` in ``[min_len, max_len]``."""

    distribution: str = "longtail"
    min_len: int
    max_len: int
    median: int | None = None
    sigma: float = 1.0
    multiple: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.distribution not in DISTRIBUTIONS:
            raise ConfigError(
                f"unknown length distribution {self.distribution!r}", hint=f"use {', '.join(DISTRIBUTIONS)}"
            )
        if not 1 <= self.min_len <= self.max_len:
            raise ConfigError(f"need 1 <= min_len <= max_len, got {self.min_len} and {self.max_len}")
        if self.max_len < self.multiple:
            raise ConfigError(f"max_len={self.max_len} is below the required multiple {self.multiple}")
        if self.median is not None and self.distribution not in ("longtail", "bimodal"):
            raise ConfigError(
                f"a median applies to the longtail and bimodal distributions, not {self.distribution}"
            )
        if self.median is not None and self.median < 1:
            raise ConfigError(f"the median length must be >= 1, got {self.median}")
        self.median = self.median or int(math.sqrt(self.min_len * self.max_len))

    def sample(self, n: int) -> np.ndarray:
        if n < 1:
            raise ConfigError(f"the number of sequences must be >= 1, got {n}")
        rng = np.random.default_rng(self.seed)
        if self.distribution == "longtail":
            raw = rng.lognormal(math.log(self.median), self.sigma, n)
        elif self.distribution == "uniform":
            raw = rng.uniform(self.min_len, self.max_len, n)
        elif self.distribution == "bimodal":
            long = rng.random(n) < 0.2
            raw = np.where(long, rng.normal(0.9 * self.max_len, 0.05 * self.max_len, n),
                           rng.lognormal(math.log(self.median), 0.3, n))  # fmt: skip
        else:
            raw = np.full(n, self.max_len, dtype=np.float64)
        m = self.multiple
        lo = -(-self.min_len // m) * m
        hi = (self.max_len // m) * m
        return np.clip(np.ceil(raw / m) * m, lo, hi).astype(np.int64)


def load_corpus(name: str = "tinyshakespeare", *, data_dir: str | Path | None = None) -> torch.Tensor:
    """A corpus as a uint8 token tensor (bytes): ``tinyshakespeare`` or ``wikitext2`` from effml's data
    directory, or the path of any text file."""
    from effcore.assets import load_text

    path = Path(name)
    if path.suffix and path.is_file():
        data = path.read_bytes()
    elif name in ("tinyshakespeare", "wikitext2"):
        data = load_text(name, "all" if name == "tinyshakespeare" else "test", data_dir=data_dir).encode(
            "utf-8"
        )
    else:
        raise ConfigError(
            f"unknown corpus {name!r}", hint="use tinyshakespeare, wikitext2 or a text file's path"
        )
    if not data:
        raise ConfigError(f"the corpus {name!r} is empty", hint="give a text file with text in it")
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


class TextStream:
    """``(inputs, targets)`` of the sampled lengths from ``corpus``; ``batch`` sequences per step."""

    def __init__(self, corpus: torch.Tensor, lengths: LengthSampler, *, steps: int, batch: int = 1) -> None:
        if corpus.numel() < lengths.max_len + 2:
            raise ConfigError(
                f"the corpus has {corpus.numel()} tokens, fewer than max_len + 2 = {lengths.max_len + 2}",
                hint="lower --max-len or use a bigger corpus",
            )
        self.corpus, self.batch, self.steps = corpus.long(), batch, steps
        self.lengths = lengths.sample(steps)
        rng = np.random.default_rng(lengths.seed + 1)
        self.starts = [rng.integers(0, corpus.numel() - int(s) - 1, batch) for s in self.lengths]

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for s, starts in zip(self.lengths, self.starts, strict=True):
            s = int(s)
            windows = torch.stack([self.corpus[int(a) : int(a) + s + 1] for a in starts])
            yield windows[:, :-1], windows[:, 1:]
