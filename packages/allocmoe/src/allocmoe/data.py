"""Token blocks for calibration and evaluation, from the shared text corpora.

Splits (fixed so no number is measured on text a step trained or calibrated on):

- ``calib``: the second half of WikiText-2 validation (Alloc-L profiling, threshold calibration);
- ``test``: WikiText-2 test (every reported quality number, the build report's included).

``allocmoe build-model`` trains routers on Tiny Shakespeare train, GSM8K train and the *first* half of
WikiText-2 validation (:mod:`allocmoe.build`), never on these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effcore.assets import load_text
from effcore.errors import ConfigError
from effcore.lm import token_blocks

__all__ = ["SPLITS", "eval_blocks", "split_text", "text_blocks", "wikitext2_valid_halves"]

SPLITS = ("calib", "test")

# Characters tokenised per requested token: WikiText-2 averages about 4.5 characters per SmolLM2 token,
# so the prefix holds every requested block; the whole split is tokenised when it does not.
_CHARS_PER_TOKEN = 6


def wikitext2_valid_halves(data_dir: str | Path | None = None) -> tuple[str, str]:
    """WikiText-2 valid split at the line break nearest its middle: (build half, Alloc-L calibration half)."""
    text = load_text("wikitext2", "valid", data_dir=data_dir)
    cut = text.find("\n", len(text) // 2)
    cut = len(text) // 2 if cut < 0 else cut + 1
    return text[:cut], text[cut:]


def split_text(split: str, *, data_dir: str | Path | None = None) -> str:
    """The raw text of one of :data:`SPLITS`."""
    if split == "calib":
        return wikitext2_valid_halves(data_dir)[1]
    if split == "test":
        return load_text("wikitext2", "test", data_dir=data_dir)
    raise ConfigError(f"unknown split {split!r}", hint=f"one of: {', '.join(SPLITS)}")


def _check_counts(blocks: int, block_size: int) -> None:
    if blocks < 1:
        raise ConfigError(f"--blocks must be >= 1, got {blocks}")
    if block_size < 2:
        raise ConfigError(f"--block-size must be >= 2 (a block predicts its next tokens), got {block_size}")


def text_blocks(
    tokenizer: Any, split: str, *, blocks: int, block_size: int, data_dir: str | Path | None = None
) -> torch.Tensor:
    """``[blocks, block_size]`` token ids from the start of ``split`` (deterministic; no special tokens).

    The one tokenisation of the evaluation and calibration text: ``build-model``'s quality report,
    ``eval``, ``profile`` and the tour all read their blocks here.
    """
    _check_counts(blocks, block_size)
    text = split_text(split, data_dir=data_dir)

    def cut(chars: str) -> torch.Tensor:
        ids = torch.tensor(tokenizer(chars, add_special_tokens=False)["input_ids"], dtype=torch.long)
        return token_blocks(ids, block_size=block_size, max_blocks=blocks)

    need = blocks * block_size * _CHARS_PER_TOKEN
    out = cut(text[:need])
    if out.shape[0] < blocks and need < len(text):
        out = cut(text)
    if out.shape[0] < blocks:
        raise ConfigError(
            f"the {split} split has only {out.shape[0]} blocks of {block_size} tokens, {blocks} were asked",
            hint="ask for fewer --blocks or a smaller --block-size",
        )
    return out


def eval_blocks(
    model: torch.nn.Module,
    tokenizer: Any,
    split: str,
    *,
    blocks: int,
    block_size: int,
    data_dir: str | Path | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """:func:`text_blocks` of ``split``; for a model without a tokenizer (``tiny:``/``shape:`` test
    models) seeded random token ids instead, one stream per split (they show the machinery, not quality)."""
    if tokenizer is not None:
        return text_blocks(tokenizer, split, blocks=blocks, block_size=block_size, data_dir=data_dir)
    _check_counts(blocks, block_size)
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", hint=f"one of: {', '.join(SPLITS)}")
    vocab = model.config.get_text_config().vocab_size
    g = torch.Generator().manual_seed(seed + SPLITS.index(split))
    return torch.randint(3, vocab, (blocks, block_size), generator=g)
