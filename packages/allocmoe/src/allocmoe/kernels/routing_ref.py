"""Pure-torch reference of budgeted routing (scores, per-token top-K_orig, floor, pooled extra slots).

This is the canonical definition the Triton kernel is tested against. Selection is deterministic:
ties are broken by the lower expert index (per-token top-K) and by the lower flat position in the
pool (token-major, then rank), exactly as a stable descending sort does.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["ScoreFn", "route_reference"]

ScoreFn = Literal["softmax", "sigmoid"]


def route_reference(
    logits: torch.Tensor,
    *,
    k_orig: int,
    k_base: int,
    n_extra: int | None = None,
    score: ScoreFn = "softmax",
    choice_bias: torch.Tensor | None = None,
    candidate_mask: torch.Tensor | None = None,
    num_pools: int = 1,
    valid_tokens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Route ``logits[T, E]`` under an Alloc-T budget.

    - scores ``s = softmax(logits)`` or ``sigmoid(logits)`` in float32; experts are ranked per token by
      ``s + choice_bias`` (DeepSeek-V3's correction bias) restricted to ``candidate_mask`` (group limit);
    - each token keeps its first ``k_base`` ranks (the floor);
    - the remaining ranks ``k_base..k_orig-1`` of all tokens of a pool form one pool; the ``n_extra``
      largest *scores* in it are kept (one top-k). ``n_extra=None`` keeps every rank (plain top-k).
    - ``num_pools`` splits the T tokens into that many equal consecutive pools (per-sequence scope),
      each selecting its own ``n_extra``.
    - ``valid_tokens[T]`` (bool): invalid tokens (padding) keep nothing and are not in any pool.

    Returns ``(scores[T, k_orig] float32, ids[T, k_orig] int64 with -1 where dropped, keep[T, k_orig] bool)``;
    ``scores`` are the gate scores of the ranked experts (also of dropped ones), ranks in descending order.
    """
    T = logits.shape[0]
    s = logits.float().softmax(-1) if score == "softmax" else logits.float().sigmoid()
    choice = s if choice_bias is None else s + choice_bias.float()
    if candidate_mask is not None:
        choice = choice.masked_fill(~candidate_mask, float("-inf"))
    topi = torch.sort(choice, dim=-1, descending=True, stable=True).indices[:, :k_orig]
    topv = s.gather(1, topi)
    keep = torch.zeros(T, k_orig, dtype=torch.bool, device=logits.device)
    if n_extra is None:
        keep[:] = True
    else:
        keep[:, :k_base] = True
        if k_orig > k_base and n_extra > 0:
            pool = topv[:, k_base:].clone()
            if valid_tokens is not None:
                pool[~valid_tokens] = float("-inf")
            pool = pool.reshape(num_pools, -1)
            n = min(n_extra, pool.shape[1])
            sel = torch.sort(pool, dim=-1, descending=True, stable=True).indices[:, :n]
            extra = torch.zeros_like(pool, dtype=torch.bool).scatter_(1, sel, True)
            extra &= torch.isfinite(pool)  # padding never takes a slot, even when n > valid candidates
            keep[:, k_base:] = extra.reshape(T, k_orig - k_base)
    if valid_tokens is not None:
        keep &= valid_tokens[:, None]
    ids = torch.where(keep, topi, torch.full_like(topi, -1))
    return topv, ids, keep
