"""Profiles (measured step times per strategy and sequence length) and the time models fitted to them.

A profile is a JSON file tied to the hardware, the parallel degree and the model shape it was
measured on; loading it for anything else is an error that names the mismatch.

The time model of a strategy is ``t(s) = c0 + c1 s + c2 s^2`` per layer with non-negative
coefficients, fitted by relative least squares. Why not the paper's random forest + polynomial:
the three terms are the three physical costs (latency of a fixed number of collectives, the GEMMs and
communication volume that grow with ``s``, attention's ``s^2``), so the fit interpolates like a free
polynomial and extrapolates without the sign flips a free cubic or a forest's flat tail would give
at 10x the profiled length. The k-fold cross-validated relative error is stored with every model.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from effcore.device import cpu_model
from effcore.errors import ConfigError, DataNotFoundError
from effcore.io import write_json
from paradyse.config import STRATEGIES, ModelConfig

__all__ = [
    "FORMAT",
    "Profile",
    "ProfileError",
    "TimeModel",
    "fit_time_model",
    "hardware_id",
    "nnls_relative",
    "paper_time_models",
]

FORMAT = "paradyse-profile/1"


class ProfileError(DataNotFoundError):
    """A profile file is missing, malformed, or was measured for other hardware or another model."""


def hardware_id(backend: str, device_name: str | None = None) -> str:
    """What a profile is tied to: the device (CPU model or GPU name) and the collective backend."""
    name = device_name or cpu_model()
    return f"{name} | {backend}"


@dataclass(frozen=True, kw_only=True, slots=True)
class TimeModel:
    """Per-layer time of one strategy: ``c0 + c1 s + c2 s^2`` seconds (s = sequence length)."""

    strategy: str
    coef: tuple[float, float, float]
    cv_error: float
    profiled_max: int
    n_points: int

    def predict(self, seq_len: Any) -> np.ndarray:
        s = np.asarray(seq_len, dtype=np.float64)
        c0, c1, c2 = self.coef
        return c0 + c1 * s + c2 * s * s

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "coef": list(self.coef),
            "cv_error": self.cv_error,
            "profiled_max": self.profiled_max,
            "n_points": self.n_points,
        }


# time_calculator.py [from code]: whole-model t(s) = a s^2 + b s + c for L=32, H=4096 (about 7B).
_PAPER_FITS = {
    "megatron": (1.23e-9, 3.3e-5, 0.098),
    "ulysses": (1.05e-9, 2.7e-5, 0.97),
    "metp": (1.18e-9, 3.9e-5, 1.44),
}


def paper_time_models(layers: int = 32) -> dict[str, TimeModel]:
    """The authors' fitted times (per layer) for their 7B configuration: megatron, ulysses, metp."""
    return {
        k: TimeModel(
            strategy=k,
            coef=(c / layers, b / layers, a / layers),
            cv_error=float("nan"),
            profiled_max=0,
            n_points=0,
        )
        for k, (a, b, c) in _PAPER_FITS.items()
    }


def nnls_relative(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Minimise ``sum(((X c - y) / y)^2)`` over ``c >= 0`` (few columns: every support set is tried)."""
    a, b = x / y[:, None], np.ones_like(y)
    best, best_err = np.zeros(x.shape[1]), np.inf
    for k in range(1, x.shape[1] + 1):
        for support in itertools.combinations(range(x.shape[1]), k):
            cols = list(support)
            sol, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(sol < 0):
                continue
            c = np.zeros(x.shape[1])
            c[cols] = sol
            err = float(np.sum((a @ c - b) ** 2))
            if err < best_err:
                best, best_err = c, err
    return best


def fit_time_model(
    strategy: str, seq_lens: Sequence[int], times: Sequence[float], *, folds: int = 5
) -> TimeModel:
    """Fit ``c0 + c1 s + c2 s^2 >= 0`` to per-layer times; ``cv_error`` is the k-fold mean |relative error|."""
    s = np.asarray(seq_lens, dtype=np.float64)
    y = np.asarray(times, dtype=np.float64)
    if len(s) < 3 or len(s) != len(y) or not np.all(y > 0):
        raise ConfigError(f"{strategy}: need >= 3 positive timings to fit a time model, got {len(y)}")
    scale = float(s.max())
    x = np.stack([np.ones_like(s), s / scale, (s / scale) ** 2], axis=1)
    folds = min(folds, len(s))
    ids = np.arange(len(s)) % folds
    errs = np.empty(len(s))
    for f in range(folds):
        test = ids == f
        c = nnls_relative(x[~test], y[~test])
        errs[test] = np.abs(x[test] @ c - y[test]) / y[test]
    c = nnls_relative(x, y)
    coef = (float(c[0]), float(c[1] / scale), float(c[2] / scale**2))
    return TimeModel(strategy=strategy, coef=coef, cv_error=float(errs.mean()), profiled_max=int(s.max()),
                     n_points=len(s))  # fmt: skip


@dataclass(kw_only=True, slots=True)
class Profile:
    """Measured per-layer step times (forward + backward) of every strategy over sequence lengths."""

    hardware: str
    world_size: int
    batch: int
    model: ModelConfig
    points: list[dict[str, Any]]  # {strategy, seq_len, layer_time_s, iqr_s, activation_bytes, peak_bytes}
    switch_cost_s: float = 0.0
    created: float = field(default_factory=time.time)

    def seq_lens(self, strategy: str) -> list[int]:
        return [pt["seq_len"] for pt in self.points if pt["strategy"] == strategy]

    def time_models(self) -> dict[str, TimeModel]:
        models = {}
        for k in STRATEGIES:
            pts = [pt for pt in self.points if pt["strategy"] == k]
            if len(pts) >= 3:
                models[k] = fit_time_model(
                    k, [pt["seq_len"] for pt in pts], [pt["layer_time_s"] for pt in pts]
                )
        if not models:
            raise ProfileError(
                "the profile has fewer than 3 points for every strategy", hint="profile more lengths"
            )
        return models

    def check(self, *, model: ModelConfig, world_size: int, hardware: str | None = None) -> None:
        """Refuse a profile of another model shape, parallel degree or (when given) hardware."""
        problems = []
        ours, theirs = self.model.to_dict(), model.to_dict()
        diff = [k for k in theirs if k != "name" and theirs[k] != ours[k]]  # the name is only a label
        if diff:
            problems.append(f"model differs in {', '.join(diff)}")
        if self.world_size != world_size:
            problems.append(f"measured on {self.world_size} ranks, not {world_size}")
        if hardware is not None and self.hardware != hardware:
            problems.append(f"measured on '{self.hardware}', this is '{hardware}'")
        if problems:
            raise ProfileError(
                f"the profile does not match: {'; '.join(problems)}",
                hint="run `paradyse profile` for this model, degree and machine",
            )

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "hardware": self.hardware, "world_size": self.world_size, "batch": self.batch,
                "model": self.model.to_dict(), "points": self.points, "switch_cost_s": self.switch_cost_s,
                "created": self.created}  # fmt: skip

    def save(self, path: str | Path) -> Path:
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        path = Path(path)
        if not path.is_file():
            raise ProfileError(f"profile {path} not found", hint="run `paradyse profile --out FILE` first")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise ProfileError(f"{path} is not a paradyse profile (format {data.get('format')!r})")
            return cls(hardware=data["hardware"], world_size=int(data["world_size"]), batch=int(data["batch"]),
                       model=ModelConfig.from_dict(data["model"]), points=list(data["points"]),
                       switch_cost_s=float(data.get("switch_cost_s", 0.0)), created=float(data["created"]))  # fmt: skip
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ProfileError(f"{path} is not a readable profile ({type(err).__name__}: {err})") from None
