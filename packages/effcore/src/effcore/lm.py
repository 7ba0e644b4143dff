"""Language-model evaluation shared by packages: token blocks and perplexity."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from effcore.errors import ConfigError

__all__ = ["PerplexityResult", "perplexity", "token_blocks"]


def token_blocks(ids: torch.Tensor, *, block_size: int, max_blocks: int | None = None) -> torch.Tensor:
    """Cut a 1-D id tensor into ``[n, block_size]`` non-overlapping blocks (the tail is dropped).

    Raises when not even one block fits, instead of silently returning nothing.
    """
    if block_size < 2:
        raise ConfigError(f"block_size must be >= 2, got {block_size}")
    ids = ids.reshape(-1)
    n = ids.numel() // block_size
    if max_blocks is not None:
        n = min(n, max_blocks)
    if n == 0:
        raise ConfigError(
            f"the text has {ids.numel()} tokens, fewer than one block of {block_size}",
            hint="use more text or a smaller --block-size",
        )
    return ids[: n * block_size].view(n, block_size)


@dataclass(kw_only=True, slots=True, frozen=True)
class PerplexityResult:
    """Perplexity over ``tokens`` predicted tokens (``exp(nll)``)."""

    perplexity: float
    nll: float
    tokens: int
    blocks: int

    def to_dict(self) -> dict:
        return {"perplexity": self.perplexity, "nll": self.nll, "tokens": self.tokens, "blocks": self.blocks}


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    *,
    batch_size: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> PerplexityResult:
    """Perplexity of a causal LM on ``[n, T]`` token blocks: every block predicts its T-1 next tokens.

    Blocks are independent (no context carried across), the usual fixed-length evaluation.
    """
    device = next(model.parameters()).device
    total_nll, total_tok = 0.0, 0
    n = blocks.shape[0]
    for start in range(0, n, batch_size):
        batch = blocks[start : start + batch_size].to(device)
        logits = model(input_ids=batch).logits.float()
        nll = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total_nll += float(nll)
        total_tok += batch[:, 1:].numel()
        if progress:
            progress(min(start + batch_size, n), n)
    mean = total_nll / total_tok
    return PerplexityResult(perplexity=math.exp(mean), nll=mean, tokens=total_tok, blocks=n)
