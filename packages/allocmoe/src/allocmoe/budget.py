"""Activation budgets: how many routed-expert activations each MoE layer may spend per token.

Notation of the Alloc-MoE paper: a model has ``L`` MoE layers, each routing a token to its top
``K_orig`` experts, so the unmodified model spends ``B_orig = L * K_orig`` routed activations per
token. A budget ``B <= B_orig`` is split into per-layer averages ``K_l`` (``sum K_l <= B``); inside a
layer Alloc-T keeps every token's top ``K_base`` and hands the remaining ``(K_l - K_base) * T`` slots of
the ``T`` tokens of a scope to the highest-scoring (token, expert) candidates. Shared experts always run
and are outside the budget.

Besides exact budgets, two threshold baselines (post-hoc top-p and NAEE-style skipping) spend a budget
only on average; :class:`ThresholdPolicy` describes them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Literal

from effcore.errors import ConfigError

__all__ = [
    "ActivationBudget",
    "Policy",
    "Renorm",
    "Scope",
    "ThresholdPolicy",
    "check_budget_text",
    "check_total",
    "parse_budget",
]

Scope = Literal["forward", "sequence"]
Renorm = Literal["kept", "full"]


@dataclass(frozen=True, slots=True)
class ActivationBudget:
    """An exact expert-activation budget.

    - ``k_layers``: ``K_l`` for every MoE layer, in model order (1 <= K_l <= k_orig).
    - ``k_orig``: the model's routed top-k.
    - ``k_base``: the per-token floor of Alloc-T (0 <= k_base <= min K_l); ``k_base = 0`` is SeqTopK-style
      pooling. ``None`` means plain top-``K_l`` routing in every layer (no pooling: the Uniform
      baseline and Alloc-L alone); in a layer where ``k_base = K_l`` Alloc-T is plain top-``K_l`` too.
    - ``scope``: the tokens that share a layer's pool, ``"forward"`` (every token of the forward pass,
      batch x sequence; the paper's batch-level reading) or ``"sequence"`` (each sequence pools alone,
      so a request's routing does not depend on its batch neighbours). At batch-1 decode both scopes
      have T = 1 and Alloc-T is plain top-``K_l``.
    - ``renorm``: for gates that normalise their top-k weights (Mixtral; ``norm_topk_prob=True``),
      ``"kept"`` normalises over the experts a token keeps (what the gate does when its top-k is
      lowered), ``"full"`` normalises over the token's top-``k_orig`` candidates so a dropped expert's
      share is lost. Gates that do not normalise (DeepSeek-V2, Qwen1.5-MoE, OLMoE) ignore it.
    """

    k_layers: tuple[int, ...]
    k_orig: int
    k_base: int | None = 1
    scope: Scope = "forward"
    renorm: Renorm = "kept"

    def __post_init__(self) -> None:
        object.__setattr__(self, "k_layers", tuple(int(k) for k in self.k_layers))
        if self.k_orig < 1:
            raise ConfigError(f"k_orig must be >= 1, got {self.k_orig}")
        if not self.k_layers:
            raise ConfigError("a budget needs at least one MoE layer")
        bad = [k for k in self.k_layers if not 1 <= k <= self.k_orig]
        if bad:
            raise ConfigError(
                f"per-layer budgets {bad} are outside 1..{self.k_orig}",
                hint=f"every MoE layer keeps between 1 and k_orig={self.k_orig} experts per token on average",
            )
        if self.k_base is not None and not 0 <= self.k_base <= min(self.k_layers):
            raise ConfigError(
                f"k_base={self.k_base} is outside 0..{min(self.k_layers)}",
                hint="the per-token floor cannot exceed the smallest per-layer budget",
            )
        if self.scope not in ("forward", "sequence"):
            raise ConfigError(f"scope {self.scope!r} is not one of: forward, sequence")
        if self.renorm not in ("kept", "full"):
            raise ConfigError(f"renorm {self.renorm!r} is not one of: kept, full")

    @property
    def num_layers(self) -> int:
        return len(self.k_layers)

    @property
    def total(self) -> int:
        """``B``: routed activations per token summed over MoE layers."""
        return sum(self.k_layers)

    @property
    def full(self) -> int:
        """``B_orig = L * K_orig``."""
        return self.num_layers * self.k_orig

    @property
    def is_full(self) -> bool:
        return all(k == self.k_orig for k in self.k_layers)

    @classmethod
    def uniform(
        cls, num_layers: int, k_orig: int, k: int, *, k_base: int | None = None, **kw
    ) -> ActivationBudget:
        """Every layer at ``k``; ``k_base=None`` (default) is plain top-k."""
        return cls((k,) * num_layers, k_orig, k_base, **kw)

    @classmethod
    def full_budget(cls, num_layers: int, k_orig: int) -> ActivationBudget:
        return cls.uniform(num_layers, k_orig, k_orig, k_base=None)

    @classmethod
    def spread(cls, num_layers: int, k_orig: int, total: int, **kw) -> ActivationBudget:
        """``total`` spread as evenly as possible (shallow layers get the remainder): uniform at any B."""
        check_total(total, num_layers, k_orig, kw.get("k_base") or 1)
        q, r = divmod(total, num_layers)
        return cls(tuple(q + (1 if i < r else 0) for i in range(num_layers)), k_orig, **kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["k_layers"] = list(self.k_layers)
        d["total"] = self.total
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ActivationBudget:
        return cls(
            tuple(d["k_layers"]),
            int(d["k_orig"]),
            None if d.get("k_base", 1) is None else int(d.get("k_base", 1)),
            d.get("scope", "forward"),
            d.get("renorm", "kept"),
        )


@dataclass(frozen=True, slots=True)
class ThresholdPolicy:
    """A per-token threshold baseline whose budget is met only on average.

    - ``kind="top_p"``: post-hoc top-p (Dynamic-MoE / XMoE style): a token keeps its smallest prefix
      of ranked experts whose scores (normalised over all experts) sum to at least ``value``.
    - ``kind="naee"``: NAEE-style dynamic skipping: a token keeps rank r when its score is at least
      ``value`` times its top-1 score. NAEE defines this for top-2 (skip the 2nd expert when
      ``w2 < beta * w1``); applying the same ratio test to every rank of a top-K model is our
      generalisation [UNVERIFIED how the paper applied it to top-6].

    At least one and at most ``k_orig`` experts are kept. ``value`` is calibrated to an average budget
    by :func:`allocmoe.baselines.calibrate_threshold`.
    """

    kind: Literal["top_p", "naee"]
    value: float
    k_orig: int
    renorm: Renorm = "kept"

    def __post_init__(self) -> None:
        if self.kind not in ("top_p", "naee"):
            raise ConfigError(f"threshold kind {self.kind!r} is not one of: top_p, naee")
        if not 0.0 <= self.value <= 1.0:
            raise ConfigError(f"{self.kind} threshold must lie in [0, 1], got {self.value}")

    def to_dict(self) -> dict:
        return asdict(self)


Policy = ActivationBudget | ThresholdPolicy


def check_total(total: int, num_layers: int, k_orig: int, k_base: int = 1) -> None:
    """Raise unless ``L * max(1, k_base) <= total <= L * k_orig``."""
    lo, hi = num_layers * max(1, k_base), num_layers * k_orig
    if not lo <= total <= hi:
        raise ConfigError(
            f"budget B={total} is outside {lo}..{hi} for {num_layers} MoE layers with k_orig={k_orig}"
            f" and k_base={k_base}",
            hint=f"choose B between L*max(1,k_base)={lo} and L*k_orig={hi} (full budget)",
        )


def _read_budget(text: str | int | float, full: int) -> int:
    s = str(text).strip().lower()
    try:
        if s == "full":
            return full
        if "/" in s or "." in s:
            frac = Fraction(s)
            if not 0 < frac <= 1:
                raise ValueError
            return round(frac * full)
        return int(s)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(
            f"cannot read budget {text!r}",
            hint=f"give an integer B (full = {full}), a fraction of full like 1/2 or 0.5, or 'full'"
            if full
            else "give an integer B, a fraction of the full budget like 1/2 or 0.5, or 'full'",
        ) from None


def check_budget_text(text: str | int | float) -> None:
    """Raise unless ``text`` reads as a budget (checked before a model is loaded; the range needs it)."""
    _read_budget(text, 0)


def parse_budget(text: str | int | float, num_layers: int, k_orig: int, *, k_base: int | None = 1) -> int:
    """A budget from the CLI: an integer ``B``, a fraction of full (``"1/2"``, ``"0.5"``), or ``"full"``."""
    total = _read_budget(text, num_layers * k_orig)
    check_total(total, num_layers, k_orig, k_base or 1)
    return total
