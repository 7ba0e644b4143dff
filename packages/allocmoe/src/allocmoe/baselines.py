"""The peers of Alloc-MoE in the same harness, so every comparison is like for like.

- Uniform: every layer at top-k (``ActivationBudget.spread(..., k_base=None)``).
- LExI (arXiv 2509.02753): a data-free per-layer sensitivity, the relative Frobenius deviation of one MoE
  block's output on random N(0, 1) inputs when its top-k is lowered from K_orig to k, then a per-layer
  top-k assignment under the budget. We assign with the same DP as Alloc-L so that only the signal
  differs (LExI's own search procedure is [UNVERIFIED] in our notes).
- Post-hoc top-p (Dynamic-MoE / XMoE style) and NAEE-style dynamic skipping: per-token thresholds whose
  single global value is calibrated so the *average* activations per token equal the budget on the
  calibration set (:func:`calibrate_threshold`).
- SeqTopK-style pooling: Alloc-T with ``k_base=0`` and per-sequence pools.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from allocmoe.adapters import find_moe_layers, model_k_orig
from allocmoe.budget import ActivationBudget, ThresholdPolicy, check_total
from allocmoe.runtime import BudgetHandle, threshold_keep

__all__ = [
    "METHODS",
    "calibrate_threshold",
    "lexi_sensitivity",
    "method_policy",
    "serving_policy",
]

METHODS = ("uniform", "alloc_l", "alloc_t", "alloc_moe", "lexi", "top_p", "naee", "seqtopk")


@torch.inference_mode()
def lexi_sensitivity(
    model: torch.nn.Module,
    *,
    tokens: int = 512,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[float]]:
    """LExI's table ``D[i][k-1] = ||y_k - y_K|| / ||y_K||`` of each MoE block alone on N(0, 1) inputs."""
    moe = find_moe_layers(model)
    L, K = len(moe), model_k_orig(model, moe)
    p = next(model.parameters())
    hidden = model.config.get_text_config().hidden_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(1, tokens, hidden, generator=gen).to(device=p.device, dtype=p.dtype)
    handle = BudgetHandle(model, ActivationBudget.full_budget(L, K), layers=moe)
    handle.record = False
    table: list[list[float]] = []
    try:
        for i, layer in enumerate(moe):
            ref = layer.block(x).float()
            row = []
            for k in range(1, K + 1):
                handle.set_policy(ActivationBudget((K,) * i + (k,) + (K,) * (L - i - 1), K, None))
                y = layer.block(x).float()
                row.append(float((y - ref).norm() / ref.norm().clamp_min(1e-12)))
            handle.set_policy(ActivationBudget.full_budget(L, K))
            table.append(row)
            if progress:
                progress(i + 1, L)
    finally:
        handle.remove()
    return table


@torch.inference_mode()
def _router_logits(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Router logits of every MoE layer at full budget on ``blocks`` (concatenated over tokens)."""
    moe = find_moe_layers(model)
    got: list[list[torch.Tensor]] = [[] for _ in moe]
    hooks = []
    for i, layer in enumerate(moe):

        def hook(_m, _args, out, i=i):
            got[i].append(out[0].detach().float())

        hooks.append(layer.adapter.router(layer.block).register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        for s in range(0, blocks.shape[0], batch_size):
            model(input_ids=blocks[s : s + batch_size].to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return [torch.cat(g) for g in got]


def _mean_kept(logits: list[torch.Tensor], specs, kind: str, value: float, k_orig: int) -> float:
    total = 0.0
    for lg, spec in zip(logits, specs, strict=True):
        s = lg.softmax(-1) if spec.score == "softmax" else lg.sigmoid()
        topv = s.topk(k_orig, dim=-1).values
        keep = threshold_keep(topv, s.sum(-1, keepdim=True), kind, value)
        total += float(keep.sum(-1).float().mean())
    return total


def calibrate_threshold(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    kind: Literal["top_p", "naee"],
    total: float,
    *,
    batch_size: int = 4,
    refine: int = 2,
    iters: int = 40,
) -> ThresholdPolicy:
    """The threshold whose average activations per token (summed over layers) equal ``total``.

    Bisection on the full-budget router scores of ``blocks``, then ``refine`` fixed-point rounds that
    measure the actually spent budget with the policy applied (upstream thresholds change downstream
    scores) and correct the target.
    """
    moe = find_moe_layers(model)
    L, K = len(moe), model_k_orig(model, moe)
    check_total(round(total), L, K)
    logits = _router_logits(model, blocks, batch_size)
    specs = [m.adapter.spec(m.block) for m in moe]
    increasing = kind == "top_p"  # more kept as p grows; for NAEE fewer kept as beta grows

    def solve(target: float) -> float:
        lo, hi = 0.0, 1.0
        for _ in range(iters):
            mid = (lo + hi) / 2
            kept = _mean_kept(logits, specs, kind, mid, K)
            if (kept < target) == increasing:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    target = float(total)
    value = solve(target)
    for _ in range(refine):
        policy = ThresholdPolicy(kind, value, K)
        handle = BudgetHandle(model, policy, layers=moe)
        try:
            with torch.inference_mode():
                device = next(model.parameters()).device
                for s in range(0, blocks.shape[0], batch_size):
                    model(input_ids=blocks[s : s + batch_size].to(device), use_cache=False)
            spent = handle.stats.activations_per_token
        finally:
            handle.remove()
        if spent <= 0 or abs(spent - total) / total < 0.005:
            break
        target = min(L * K, max(L, target * total / spent))
        value = solve(target)
    return ThresholdPolicy(kind, value, K)


def method_policy(
    method: str,
    total: int,
    *,
    num_layers: int,
    k_orig: int,
    profile=None,
    lexi_table: list[list[float]] | None = None,
    k_base: int = 1,
    scope: str = "forward",
    threshold: Callable[[str, int], ThresholdPolicy] | None = None,
    exact: bool = False,
):
    """The policy of a named method at budget ``total`` (see :data:`METHODS`).

    ``exact``: the DP-allocated methods (alloc_l, alloc_moe, lexi) spend exactly ``total`` instead of
    at most ``total``; the others spend exactly ``total`` (or on average, the thresholds) anyway.
    """
    from allocmoe.alloc_l import allocate

    if method == "uniform":
        return ActivationBudget.spread(num_layers, k_orig, total, k_base=None)
    if method == "alloc_t":
        return ActivationBudget.spread(num_layers, k_orig, total, k_base=k_base, scope=scope)
    if method == "seqtopk":
        return ActivationBudget.spread(num_layers, k_orig, total, k_base=0, scope="sequence")
    if method in ("alloc_l", "alloc_moe"):
        if profile is None:
            raise ValueError(f"method {method} needs a sensitivity profile")
        k = None if method == "alloc_l" else k_base
        return profile.allocate(total, k_base=k, exact=exact, scope=scope)
    if method == "lexi":
        if lexi_table is None:
            raise ValueError("method lexi needs its sensitivity table")
        return allocate(lexi_table, total, k_orig, k_base=None, exact=exact)
    if method in ("top_p", "naee"):
        if threshold is None:
            raise ValueError(f"method {method} needs a calibration callback")
        return threshold(method, total)
    raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")


def serving_policy(
    total: int,
    *,
    num_layers: int,
    k_orig: int,
    profile=None,
    k_base: int = 1,
    exact: bool = False,
) -> ActivationBudget | None:
    """The budget ``generate`` and ``bench`` serve at ``B = total``; ``None`` at the full budget.

    ``None`` means the unmodified model (nothing wrapped, transformers' own MoE forward): ``full`` is
    not a DP choice. Below full: Alloc-MoE (Alloc-L + Alloc-T) with a profile, else Alloc-T on a
    uniform split.
    """
    if total == num_layers * k_orig:
        return None
    if profile is not None:
        return profile.allocate(total, k_base=k_base, exact=exact)
    return ActivationBudget.spread(num_layers, k_orig, total, k_base=k_base)
