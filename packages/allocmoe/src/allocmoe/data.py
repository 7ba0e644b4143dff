"""Token blocks for calibration and evaluation, from the shared text corpora.

Splits (fixed so no number is measured on text a step trained or calibrated on):

- ``calib``: the second half of WikiText-2 validation (Alloc-L profiling, threshold calibration);
- ``test``: WikiText-2 test (every reported quality number).

``allocmoe build-model`` trains routers on Tiny Shakespeare train, GSM8K train and the *first* half of
WikiText-2 validation (:mod:`allocmoe.build`), never on these.
"""

from __future__ import annotations

from pathlib import Path

import torch

from effcore.assets import load_text
from effcore.errors import ConfigError
from effcore.lm import token_blocks

__all__ = ["SPLITS", "split_text", "text_blocks"]

SPLITS = ("calib", "test")


def split_text(split: str, *, data_dir: str | Path | None = None) -> str:
    """The raw text of one of :data:`SPLITS`."""
    if split == "calib":
        from allocmoe.build import wikitext2_valid_halves

        return wikitext2_valid_halves(data_dir)[1]
    if split == "test":
        return load_text("wikitext2", "test", data_dir=data_dir)
    raise ConfigError(f"unknown split {split!r}", hint=f"one of: {', '.join(SPLITS)}")


def text_blocks(
    tokenizer, split: str, *, blocks: int, block_size: int, data_dir: str | Path | None = None
) -> torch.Tensor:
    """``[blocks, block_size]`` token ids from the start of ``split`` (deterministic)."""
    text = split_text(split, data_dir=data_dir)
    # tokenise only what is needed (about 5 characters per token is plenty for English text)
    need = blocks * block_size * 6
    ids = torch.tensor(tokenizer(text[:need], add_special_tokens=False)["input_ids"], dtype=torch.long)
    out = token_blocks(ids, block_size=block_size, max_blocks=blocks)
    if out.shape[0] < blocks:
        raise ConfigError(
            f"the {split} split has only {out.shape[0]} blocks of {block_size} tokens, {blocks} were asked",
            hint="ask for fewer --blocks or a smaller --block-size",
        )
    return out
