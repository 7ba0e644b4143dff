"""Quality under a budget: perplexity and next-token accuracy, with the budget actually spent."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields

import torch

from allocmoe.budget import Policy
from allocmoe.runtime import budgeted

__all__ = ["QualityResult", "evaluate"]


@dataclass(frozen=True, slots=True)
class QualityResult:
    """Perplexity and top-1 next-token accuracy over ``tokens`` predictions, and the spent budget.

    ``expert_load[l][e]``: kept (token, expert) pairs per expert of MoE layer ``l`` (None without a
    policy); left out of :meth:`to_dict` (a table row) as it is per expert.
    """

    perplexity: float
    nll: float
    accuracy: float
    tokens: int
    activations_per_token: float
    unique_experts_per_call: float
    expert_load: list[list[int]] | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "expert_load"}


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    policy: Policy | None = None,
    *,
    batch_size: int = 4,
    engine: str = "allocmoe",
    progress: Callable[[int, int], None] | None = None,
) -> QualityResult:
    """Evaluate ``model`` on ``blocks[N, T]`` under ``policy`` (``None``: the model as it is).

    Every block predicts its T-1 next tokens independently (fixed-length evaluation, like
    :func:`effcore.lm.perplexity`); ``activations_per_token`` is measured, so threshold baselines are
    reported at the budget they really spent.
    """
    device = next(model.parameters()).device
    nll, correct, tokens = 0.0, 0, 0
    stats = None

    def run() -> None:
        nonlocal nll, correct, tokens
        n = blocks.shape[0]
        for s in range(0, n, batch_size):
            batch = blocks[s : s + batch_size].to(device)
            logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
            target = batch[:, 1:]
            nll += float(
                torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum"
                )
            )
            correct += int((logits.argmax(-1) == target).sum())
            tokens += target.numel()
            if progress:
                progress(min(s + batch_size, n), n)

    load = None
    if policy is None:
        run()
        spent, unique = float("nan"), float("nan")
    else:
        with budgeted(model, policy, engine=engine) as stats:
            run()
        spent = stats.activations_per_token
        rows = stats.rows()
        unique = sum(r["unique_experts_per_call"] for r in rows) / len(rows)
        load = [s.load.tolist() for s in stats.layers]
    return QualityResult(
        perplexity=math.exp(nll / tokens),
        nll=nll / tokens,
        accuracy=correct / tokens,
        tokens=tokens,
        activations_per_token=spent,
        unique_experts_per_call=unique,
        expert_load=load,
    )
