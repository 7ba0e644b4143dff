"""Cost models fitted to measurements (polynomial or power law, k-fold cross-validated); roofline."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from effcore.device import DeviceSpec
from effcore.errors import ConfigError, DataNotFoundError
from effcore.io import write_json

__all__ = ["CostModel", "ModelKind", "fit_cost_model", "roofline_ns"]

ModelKind = Literal["poly", "power"]
_MAX_AUTO_DEGREE = 3
# Degree selection keeps the lowest degree whose CV error is within this factor of the best one.
_DEGREE_TOLERANCE = 1.05


@dataclass(frozen=True, kw_only=True, slots=True)
class CostModel:
    """A fitted cost ``y(x_1, ..., x_k)``: predictions are clamped at zero.

    ``kind="poly"``: ``sum_t coef_t * prod_j (x_j / scale_j) ** exponents[t][j]`` over every
    monomial of total degree <= ``degree``. ``kind="power"``: ``exp(coef_0) * prod_j x_j ** coef_j``.
    ``cv_error`` is the k-fold cross-validated mean absolute relative error (0.05 = 5 %).
    """

    kind: ModelKind
    features: tuple[str, ...]
    degree: int
    exponents: tuple[tuple[int, ...], ...]
    coef: tuple[float, ...]
    scale: tuple[float, ...]
    cv_error: float
    folds: int
    n_samples: int

    def predict(self, xs: Mapping[str, Any] | None = None, /, **features: Any) -> np.ndarray:
        """Predicted cost at the given feature values (arrays broadcast); a 0-d array for scalars."""
        values = {**(xs or {}), **features}
        missing = [f for f in self.features if f not in values]
        if missing:
            raise ConfigError(
                f"predict needs {', '.join(missing)}", hint=f"features: {', '.join(self.features)}"
            )
        cols = np.broadcast_arrays(*(np.asarray(values[f], dtype=np.float64) for f in self.features))
        x = np.stack([c.reshape(-1) for c in cols], axis=1)
        y = _design(self, x) @ np.asarray(self.coef)
        if self.kind == "power":
            y = np.exp(y)
        return np.maximum(y, 0.0).reshape(cols[0].shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "features": list(self.features),
            "degree": self.degree,
            "exponents": [list(e) for e in self.exponents],
            "coef": list(self.coef),
            "scale": list(self.scale),
            "cv_error": self.cv_error,
            "folds": self.folds,
            "n_samples": self.n_samples,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CostModel:
        try:
            return cls(
                kind=data["kind"],
                features=tuple(data["features"]),
                degree=int(data["degree"]),
                exponents=tuple(tuple(int(p) for p in e) for e in data["exponents"]),
                coef=tuple(float(c) for c in data["coef"]),
                scale=tuple(float(s) for s in data["scale"]),
                cv_error=float(data["cv_error"]),
                folds=int(data["folds"]),
                n_samples=int(data["n_samples"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"not a CostModel: {err}") from None

    def save(self, path: str | Path) -> Path:
        """Write the model as JSON (atomically: an interrupted save leaves the old file)."""
        return write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> CostModel:
        path = Path(path)
        if not path.is_file():
            raise DataNotFoundError(f"no cost model at {path}")
        return cls.from_dict(json.loads(path.read_text()))


def _design(model: CostModel, x: np.ndarray) -> np.ndarray:
    if model.kind == "power":
        return np.concatenate([np.ones((len(x), 1)), np.log(x)], axis=1)
    z = x / np.asarray(model.scale)
    return np.stack([np.prod(z ** np.asarray(e), axis=1) for e in model.exponents], axis=1)


def _monomials(k: int, degree: int) -> tuple[tuple[int, ...], ...]:
    terms = [e for e in itertools.product(range(degree + 1), repeat=k) if sum(e) <= degree]
    return tuple(sorted(terms, key=lambda e: (sum(e), tuple(-p for p in e))))


def _solve(template: CostModel, x: np.ndarray, y: np.ndarray) -> tuple[float, ...]:
    a = _design(template, x)
    if template.kind == "power":
        target, weight = np.log(y), np.ones_like(y)
    else:
        # Weighting rows by 1/y minimises squared *relative* error, the error reported by cv_error.
        target, weight = y, 1.0 / y
    coef, *_ = np.linalg.lstsq(a * weight[:, None], target * weight, rcond=None)
    return tuple(float(c) for c in coef)


def _fold_ids(n: int, folds: int) -> np.ndarray:
    # Deterministic folds: a fixed permutation dealt round-robin, independent of the data's order.
    ids = np.empty(n, dtype=np.int64)
    ids[np.random.default_rng(0).permutation(n)] = np.arange(n) % folds
    return ids


def _cv_error(template: CostModel, x: np.ndarray, y: np.ndarray, folds: int) -> float:
    ids = _fold_ids(len(y), folds)
    errors = np.empty_like(y)
    for k in range(folds):
        test = ids == k
        fitted = replace(template, coef=_solve(template, x[~test], y[~test]))
        predicted = fitted.predict(dict(zip(template.features, x[test].T, strict=True)))
        errors[test] = np.abs(predicted - y[test]) / y[test]
    return float(errors.mean())


def fit_cost_model(
    xs: Mapping[str, Any],
    ys: Any,
    *,
    kind: ModelKind = "poly",
    degree: int | None = None,
    folds: int = 5,
) -> CostModel:
    """Fit a cost model of ``ys`` (positive costs: times, bytes) on named features ``xs``.

    ``kind="poly"`` fits all monomials up to ``degree`` by relative least squares; ``degree=None``
    picks 1..3 by cross-validation (the lowest degree within 5 % of the best CV error).
    ``kind="power"`` fits ``c * prod x_j ** b_j`` in log space (features must be positive).
    """
    if not xs:
        raise ConfigError("xs has no features", hint="pass e.g. {'seq_len': [...], 'batch': [...]}")
    features = tuple(xs)
    cols = [np.asarray(xs[f], dtype=np.float64).reshape(-1) for f in features]
    y = np.asarray(ys, dtype=np.float64).reshape(-1)
    n = len(y)
    lengths = {f: len(c) for f, c in zip(features, cols, strict=True) if len(c) != n}
    if lengths:
        raise ConfigError(f"ys has {n} samples but xs has {lengths}")
    x = np.stack(cols, axis=1)
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(y > 0)):
        raise ConfigError("costs ys must be finite and positive, features finite")
    if kind not in ("poly", "power"):
        raise ConfigError(f"unknown cost model kind {kind!r}", hint="use 'poly' or 'power'")
    if kind == "power" and np.any(x <= 0):
        raise ConfigError("kind='power' needs positive features")
    if folds < 2 or folds > n:
        raise ConfigError(f"folds={folds} must be in [2, n_samples={n}]")
    scale = tuple(float(s) if s > 0 else 1.0 for s in np.abs(x).max(axis=0))

    def template(d: int) -> CostModel:
        exps = () if kind == "power" else _monomials(len(features), d)
        n_terms = len(features) + 1 if kind == "power" else len(exps)
        return CostModel(
            kind=kind,
            features=features,
            degree=d,
            exponents=exps,
            coef=(0.0,) * n_terms,
            scale=scale,
            cv_error=float("nan"),
            folds=folds,
            n_samples=n,
        )

    if degree is not None and (kind == "power" or degree < 1):
        raise ConfigError(f"degree={degree} is invalid", hint="poly needs degree >= 1; power takes no degree")
    # Every training set (all folds but one) must determine the coefficients.
    smallest_train = n - int(np.ceil(n / folds))
    degrees = [1] if kind == "power" else [degree] if degree is not None else range(1, _MAX_AUTO_DEGREE + 1)
    candidates = [t for t in map(template, degrees) if len(t.coef) <= smallest_train]
    if not candidates:
        lowest = template(min(degrees))
        raise ConfigError(
            f"{n} samples in {folds} folds cannot fit the {len(lowest.coef)} terms of degree {lowest.degree}",
            hint="measure more points or lower the degree",
        )
    errors = [_cv_error(c, x, y, folds) for c in candidates]
    best = min(errors)
    chosen = next(i for i, e in enumerate(errors) if e <= best * _DEGREE_TOLERANCE + 1e-12)
    fitted = candidates[chosen]
    return replace(fitted, coef=_solve(fitted, x, y), cv_error=errors[chosen])


def roofline_ns(
    flops: int, bytes_moved: int, *, spec: DeviceSpec, dtype: torch.dtype | str = "bfloat16"
) -> float:
    """Roofline lower bound on the time of a kernel: ``max(flops / peak, bytes / bandwidth)`` in ns."""
    if flops < 0 or bytes_moved < 0:
        raise ConfigError(f"flops and bytes must be non-negative, got {flops}, {bytes_moved}")
    return max(flops / spec.flops(dtype), bytes_moved / spec.memory_bandwidth) * 1e9
