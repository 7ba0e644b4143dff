"""Alloc-L: isolated sensitivity profiling and the grouped-knapsack DP over per-layer budgets.

Profiling follows the paper exactly: MoE layers are profiled deep to shallow; when layer ``i`` runs
at top-``k`` (k = K_orig..1), every deeper layer is forced to top-1 (so deep layers cannot compensate)
and every shallower layer keeps K_orig. ``S[i, k]`` is the calibration perplexity. That is
``L * K_orig`` perplexity runs.

The prefix cache makes them cheap: the layers below ``i`` always run at K_orig, so one full-budget
forward records the hidden states entering every decoder layer, and the run for ``(i, k)`` only
executes decoder layers ``i..`` plus the final norm and LM head. The profile is written after every
entry (atomically), so an interrupted run resumes where it stopped; the file carries fingerprints of
the model and of the calibration tokens and refuses to be used with others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from allocmoe.adapters import find_moe_layers, model_k_orig
from allocmoe.budget import ActivationBudget, check_total
from allocmoe.runtime import BudgetHandle
from effcore.errors import ConfigError, DataNotFoundError
from effcore.io import write_json

__all__ = [
    "SensitivityProfile",
    "allocate",
    "allocate_brute_force",
    "calib_fingerprint",
    "dp_allocate",
    "model_fingerprint",
    "profile_sensitivity",
]

FORMAT = "allocmoe-sensitivity/1"


# ----------------------------------------------------------------------------------------------- DP
def _check_table(S: Sequence[Sequence[float]]) -> tuple[int, int]:
    L = len(S)
    if L == 0:
        raise ConfigError("the sensitivity table is empty")
    K = len(S[0])
    if any(len(row) != K for row in S):
        raise ConfigError("the sensitivity table is ragged: every layer needs K_orig entries")
    if any(v is None or (isinstance(v, float) and math.isnan(v)) for row in S for v in row):
        raise ConfigError("the sensitivity table has missing entries", hint="finish `allocmoe profile` first")
    return L, K


def dp_allocate(
    S: Sequence[Sequence[float]], total: int, *, k_min: int = 1, exact: bool = False
) -> tuple[list[int], float]:
    """Grouped knapsack: ``argmin_K sum_i S[i][K_i - 1]`` s.t. ``sum_i K_i <= total``, ``k_min <= K_i <= K``.

    ``S[i][k-1]`` is the cost of running layer ``i`` at top-k; ``k_min`` is the floor every layer keeps
    (Alloc-T's ``K_base``: a layer cannot pool fewer slots than each token's floor). ``exact=True``
    constrains ``sum_i K_i == total`` instead (the paper's constraint is ``<=``: a noisy table may say
    that fewer experts score better, and then the DP spends less). O(L * total * K). Ties go to the
    smaller total, then the smaller budget at each layer (deterministic). Returns ``(K per layer,
    objective)``.
    """
    L, K = _check_table(S)
    if not 1 <= k_min <= K:
        raise ConfigError(f"the per-layer floor must be in 1..{K} (K_orig), got {k_min}")
    check_total(total, L, K, k_min)
    inf = float("inf")
    # best[b] = min cost of the layers so far using exactly b activations
    best = [0.0] + [inf] * total
    choice: list[list[int]] = []
    for i in range(L):
        new = [inf] * (total + 1)
        arg = [0] * (total + 1)
        for b in range(total + 1):
            for k in range(k_min, min(K, b) + 1):
                prev = best[b - k]
                if prev == inf:
                    continue
                v = prev + float(S[i][k - 1])
                if v < new[b]:
                    new[b], arg[b] = v, k
        best = new
        choice.append(arg)
    b = total if exact else min(range(total + 1), key=lambda x: (best[x], x))
    obj = best[b]
    ks = [0] * L
    for i in range(L - 1, -1, -1):
        ks[i] = choice[i][b]
        b -= ks[i]
    return ks, obj


def allocate_brute_force(
    S: Sequence[Sequence[float]], total: int, *, k_min: int = 1, exact: bool = False
) -> tuple[list[int], float]:
    """Exhaustive search over ``k_min <= K_i <= K`` (tests only: K**L combinations)."""
    L, K = len(S), len(S[0])
    best: tuple[float, list[int]] | None = None
    for ks in itertools.product(range(k_min, K + 1), repeat=L):
        if sum(ks) == total or (not exact and sum(ks) < total):
            v = sum(float(S[i][k - 1]) for i, k in enumerate(ks))
            if best is None or v < best[0]:
                best = (v, list(ks))
    if best is None:
        raise ConfigError(f"no allocation fits B={total}")
    return best[1], best[0]


# ------------------------------------------------------------------------------------- fingerprints
def model_fingerprint(model: torch.nn.Module) -> str:
    """A short hash of the config and a strided sample of every parameter (fast, weight sensitive)."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        d = cfg.to_dict()
        for volatile in ("_name_or_path", "transformers_version", "_attn_implementation_autoset", "dtype"):
            d.pop(volatile, None)
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in sorted(model.state_dict().items()):
            h.update(f"{name}:{tuple(p.shape)}".encode())
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 2048)
            h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def calib_fingerprint(blocks: torch.Tensor) -> str:
    """Hash of the calibration token blocks (shape and ids)."""
    h = hashlib.sha256(str(tuple(blocks.shape)).encode())
    h.update(blocks.to(torch.int64).cpu().numpy().tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------- profile
@dataclass
class SensitivityProfile:
    """``S[i][k-1]``: calibration perplexity with MoE layer i at top-k (deeper at 1, shallower at K_orig)."""

    model_fingerprint: str
    calib_fingerprint: str
    num_layers: int
    k_orig: int
    S: list[list[float | None]]
    meta: dict = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(v is not None for row in self.S for v in row)

    @property
    def done(self) -> int:
        return sum(v is not None for row in self.S for v in row)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "model_fingerprint": self.model_fingerprint,
            "calib_fingerprint": self.calib_fingerprint,
            "num_layers": self.num_layers,
            "k_orig": self.k_orig,
            "S": self.S,
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> SensitivityProfile:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(
                f"no sensitivity profile at {path}", hint="create it with `allocmoe profile`"
            )
        try:
            d = json.loads(path.read_text())
            if d.get("format") != FORMAT:
                raise ValueError(f"format {d.get('format')!r}")
            prof = cls(
                d["model_fingerprint"],
                d["calib_fingerprint"],
                int(d["num_layers"]),
                int(d["k_orig"]),
                [list(r) for r in d["S"]],
                d.get("meta", {}),
            )
            prof._check_table()
            return prof
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{path} is not an allocmoe sensitivity profile ({err})",
                hint="re-create it with `allocmoe profile`",
            ) from None

    def _check_table(self) -> None:
        """Raise ``ValueError`` unless ``S`` is ``num_layers x k_orig`` perplexities (>= 1) or None."""
        if self.num_layers < 1 or self.k_orig < 1:
            raise ValueError(f"num_layers={self.num_layers} and k_orig={self.k_orig} must be >= 1")
        if len(self.S) != self.num_layers:
            raise ValueError(f"its table has {len(self.S)} rows but num_layers is {self.num_layers}")
        for i, row in enumerate(self.S):
            if len(row) != self.k_orig:
                raise ValueError(f"row {i} of its table has {len(row)} entries but k_orig is {self.k_orig}")
            for v in row:
                if v is not None and not (isinstance(v, int | float) and math.isfinite(v) and v >= 1):
                    raise ValueError(f"row {i} holds {v!r}, not a perplexity (a finite number >= 1)")

    def check_model(self, model: torch.nn.Module, *, fingerprint: str | None = None) -> None:
        """Raise when this profile was made for another model."""
        fp = fingerprint or model_fingerprint(model)
        if fp != self.model_fingerprint:
            raise ConfigError(
                f"this profile was made for model {self.model_fingerprint}, not for the loaded model {fp}",
                hint="profile the loaded model with `allocmoe profile` (or load the model the profile was made for)",
            )

    def allocate(self, total: int, *, k_base: int | None = 1, exact: bool = False, **kw) -> ActivationBudget:
        """The Alloc-L budget for ``B = total`` (with the Alloc-T floor ``k_base``; None: plain top-k).

        ``exact``: spend exactly ``total`` (default: at most ``total``, the paper's constraint).
        """
        if not self.complete:
            raise ConfigError(
                f"the profile is incomplete ({self.done}/{self.num_layers * self.k_orig} entries)",
                hint="resume it with `allocmoe profile` (same arguments)",
            )
        return allocate(self.S, total, self.k_orig, k_base=k_base, exact=exact, **kw)


def allocate(
    S: Sequence[Sequence[float]],
    total: int,
    k_orig: int,
    *,
    k_base: int | None = None,
    exact: bool = False,
    **kw,
) -> ActivationBudget:
    """The DP allocation of any cost table as a budget (used for Alloc-L and for LExI's table).

    Every layer gets at least ``max(1, k_base)`` (the Alloc-T floor); ``k_base=None`` is plain top-k.
    ``exact``: ``sum K_l == total`` (default ``<= total``). The full budget ``total = L * k_orig`` is
    never a DP choice: it is every layer at ``k_orig``, plain top-k (the unmodified model's routing).
    """
    L = len(S)
    if total == L * k_orig:
        return ActivationBudget.full_budget(L, k_orig)
    ks, _ = dp_allocate(S, total, k_min=max(1, k_base or 0), exact=exact)
    return ActivationBudget(tuple(ks), k_orig, k_base, **kw)


def _decoder_parts(model: torch.nn.Module):
    base = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(base, "layers", None)
    norm = getattr(base, "norm", None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if layers is None or norm is None or head is None:
        raise ConfigError(
            f"{type(model).__name__} does not expose decoder layers, a final norm and an LM head",
            hint="use prefix_cache=False for this model",
        )
    return layers, norm, head


@torch.inference_mode()
def _capture(model, batch, layers) -> tuple[list[torch.Tensor], list[dict]]:
    """Hidden states (and kwargs) entering every decoder layer in one forward."""
    hiddens: list[torch.Tensor | None] = [None] * len(layers)
    kwargs: list[dict | None] = [None] * len(layers)
    hooks = []
    for j, layer in enumerate(layers):

        def hook(_m, args, kw, j=j):
            hiddens[j] = args[0] if args else kw["hidden_states"]
            kwargs[j] = {k: v for k, v in kw.items() if k != "hidden_states"}

        hooks.append(layer.register_forward_pre_hook(hook, with_kwargs=True))
    try:
        model(input_ids=batch, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return hiddens, kwargs  # type: ignore[return-value]


def _nll_sum(logits: torch.Tensor, batch: torch.Tensor) -> float:
    return float(
        torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
    )


def profile_sensitivity(
    model: torch.nn.Module,
    blocks: torch.Tensor,
    *,
    out: str | Path | None = None,
    batch_size: int = 4,
    prefix_cache: bool = True,
    restart: bool = False,
    engine: str = "allocmoe",
    progress: Callable[[int, int], None] | None = None,
    meta: dict | None = None,
) -> SensitivityProfile:
    """Profile ``S[i, k]`` on calibration ``blocks[N, T]`` (resumable through ``out``).

    ``prefix_cache=False`` runs every entry as a full forward (the naive L x K_orig runs; same numbers).
    ``engine``: the experts path of the budgeted runs (see :func:`allocmoe.runtime.budgeted`).
    """
    moe = find_moe_layers(model)
    L, K = len(moe), model_k_orig(model, moe)
    mfp, cfp = model_fingerprint(model), calib_fingerprint(blocks)
    prof: SensitivityProfile | None = None
    if out is not None and Path(out).is_file() and not restart:
        prof = SensitivityProfile.load(out)
        if (prof.model_fingerprint, prof.calib_fingerprint) != (mfp, cfp):
            raise ConfigError(
                f"{out} holds a profile of another model or calibration set "
                f"(model {prof.model_fingerprint} vs {mfp}, calibration {prof.calib_fingerprint} vs {cfp})",
                hint="pass --restart to overwrite it, or choose another --out",
            )
    if prof is None:
        prof = SensitivityProfile(mfp, cfp, L, K, [[None] * K for _ in range(L)], {})
    prof.meta.update(meta or {})
    prof.meta.update(
        {
            "calibration_blocks": list(blocks.shape),
            "prefix_cache": prefix_cache,
            "moe_layers": [m.name for m in moe],
        }
    )
    entries = [(i, k) for i in reversed(range(L)) for k in range(K, 0, -1)]
    total = len(entries)
    if progress:
        progress(prof.done, total)
    todo = [(i, k) for i, k in entries if prof.S[i][k - 1] is None]
    if not todo:
        return prof
    device = next(model.parameters()).device
    handle = BudgetHandle(model, ActivationBudget.full_budget(L, K), layers=moe, engine=engine)
    handle.record = False
    t_start = time.perf_counter()
    try:
        batches = [blocks[s : s + batch_size].to(device) for s in range(0, blocks.shape[0], batch_size)]
        tokens = sum(b[:, 1:].numel() for b in batches)
        cache = None
        if prefix_cache:
            layers, norm, head = _decoder_parts(model)
            cache = [_capture(model, b, layers) for b in batches]  # at full budget: the unchanged prefix
        for i, k in todo:
            ks = (K,) * i + (k,) + (1,) * (L - i - 1)
            handle.set_policy(ActivationBudget(ks, K, None))
            t0 = time.perf_counter()
            nll = 0.0
            with torch.inference_mode():
                for bi, batch in enumerate(batches):
                    if cache is None:
                        logits = model(input_ids=batch, use_cache=False).logits
                    else:
                        start = moe[i].decoder_index if moe[i].decoder_index is not None else 0
                        hiddens, kwargs = cache[bi]
                        h = hiddens[start]
                        for j in range(start, len(layers)):
                            h = layers[j](h, **kwargs[j])
                        logits = head(norm(h))
                    nll += _nll_sum(logits, batch)
            prof.S[i][k - 1] = math.exp(nll / tokens)
            prof.meta.setdefault("seconds", {})[f"{i},{k}"] = round(time.perf_counter() - t0, 4)
            if out is not None:
                prof.save(out)
            if progress:
                progress(prof.done, total)
    finally:
        handle.remove()
    prof.meta["profile_seconds"] = round(
        prof.meta.get("profile_seconds", 0.0) + time.perf_counter() - t_start, 3
    )
    if out is not None:
        prof.save(out)
    return prof
