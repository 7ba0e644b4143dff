"""Cost-model fitting: exact recovery, honest cross-validated error, lossless save/load, roofline."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.device import DeviceSpec
from effcore.errors import ConfigError
from effcore.profiling import CostModel, fit_cost_model, roofline_ns


def grid() -> dict[str, np.ndarray]:
    seq, batch = np.meshgrid([64, 128, 256, 384, 512, 1024, 2048], [1, 2, 4, 8])
    return {"seq_len": seq.ravel().astype(float), "batch": batch.ravel().astype(float)}


def quadratic(seq_len: np.ndarray, batch: np.ndarray) -> np.ndarray:
    return 5e3 + 40.0 * seq_len * batch + 0.02 * seq_len**2 + 300.0 * batch


def test_fit_recovers_a_known_quadratic_exactly() -> None:
    xs = grid()
    model = fit_cost_model(xs, quadratic(**xs), kind="poly", degree=None)
    assert model.degree == 2, "CV picks the lowest degree that fits"
    assert model.cv_error < 1e-9
    probe = {"seq_len": np.array([100.0, 3000.0, 777.0]), "batch": np.array([3.0, 1.0, 16.0])}
    np.testing.assert_allclose(model.predict(probe), quadratic(**probe), rtol=1e-9)
    assert float(model.predict(seq_len=512, batch=2)) == pytest.approx(float(quadratic(512.0, 2.0)), rel=1e-9)


def test_degree_selection_finds_attention_like_cubic_terms() -> None:
    xs = grid()
    ys = 1e4 + 8.0 * xs["seq_len"] * xs["batch"] + 0.01 * xs["seq_len"] ** 2 * xs["batch"]
    model = fit_cost_model(xs, ys)
    assert model.degree == 3, "seq_len**2 * batch has total degree 3"
    assert model.cv_error < 1e-9


def test_cv_error_is_small_on_noiseless_data_and_grows_with_noise() -> None:
    xs = grid()
    clean = quadratic(**xs)
    noise = np.random.default_rng(0).normal(0.0, 0.1, size=clean.shape)
    exact = fit_cost_model(xs, clean, degree=2)
    noisy = fit_cost_model(xs, clean * (1 + noise), degree=2)
    assert exact.cv_error < 1e-9
    assert 0.02 < noisy.cv_error < 0.5, (
        f"10 % noise should show up as a few % CV error, got {noisy.cv_error:.3f}"
    )


def test_cv_error_is_deterministic() -> None:
    xs = grid()
    ys = quadratic(**xs) * (1 + np.random.default_rng(1).normal(0, 0.05, size=len(xs["batch"])))
    assert fit_cost_model(xs, ys).to_dict() == fit_cost_model(xs, ys).to_dict()


@given(
    c0=st.floats(0.1, 10.0), c1=st.floats(-3.0, 3.0), degree=st.sampled_from([1, 2, 3, None]),
    n=st.integers(8, 30), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_cost_model_save_load_roundtrip_is_identity(
    c0: float, c1: float, degree: int | None, n: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(1.0, 100.0, size=n)
    y = np.abs(c0 * x + c1 * x**1.5) + 1.0
    note(f"x={x.tolist()}")
    model = fit_cost_model({"n": x}, y, degree=degree, folds=4)
    assert CostModel.from_dict(json.loads(json.dumps(model.to_dict()))) == model
    with tempfile.TemporaryDirectory() as tmp:
        loaded = CostModel.load(model.save(Path(tmp) / "model.json"))
    assert loaded == model
    np.testing.assert_array_equal(loaded.predict(n=x), model.predict(n=x))


@given(seed=st.integers(0, 2**16))
def test_predictions_are_never_negative(seed: int) -> None:
    x = np.arange(1.0, 11.0)
    y = np.maximum(11.0 - x, 0.5)  # a falling line: extrapolated it would turn negative
    model = fit_cost_model({"x": x}, y, degree=1)
    probe = np.random.default_rng(seed).uniform(0.0, 1000.0, size=50)
    assert np.all(model.predict(x=probe) >= 0.0)


def test_power_law_recovers_exponents() -> None:
    xs = grid()
    ys = 3.0 * xs["seq_len"] ** 1.5 * xs["batch"] ** 0.5
    model = fit_cost_model(xs, ys, kind="power")
    np.testing.assert_allclose(model.coef, [np.log(3.0), 1.5, 0.5], atol=1e-9)
    assert model.cv_error < 1e-9


@pytest.mark.parametrize(
    ("xs", "ys", "kwargs", "match"),
    [
        ({"x": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0], {"degree": 3, "folds": 3}, "cannot fit"),
        ({"x": [1.0, 2.0, 3.0]}, [1.0, 0.0, 3.0], {}, "positive"),
        ({"x": [1.0, 2.0]}, [1.0, 2.0, 3.0], {}, "samples"),
        ({"x": [1.0, 2.0, 3.0]}, [1.0, 2.0, 3.0], {"folds": 5}, "folds"),
        ({"x": [0.0, 2.0, 3.0]}, [1.0, 2.0, 3.0], {"kind": "power", "folds": 3}, "positive features"),
        ({}, [], {}, "no features"),
    ],
)
def test_fit_rejects_data_it_cannot_fit(xs: dict, ys: list, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        fit_cost_model(xs, ys, **kwargs)


def test_predict_names_missing_features() -> None:
    model = fit_cost_model(grid(), quadratic(**grid()), degree=2)
    with pytest.raises(ConfigError, match="batch"):
        model.predict(seq_len=128)


def test_roofline_is_the_slower_of_compute_and_memory() -> None:
    spec = DeviceSpec(
        name="toy", kind="cuda", memory_bytes=2**30, peak_flops={"bfloat16": 1e12}, memory_bandwidth=1e9,
        host_link_bandwidth=1e9, interconnect_bandwidth=1e9, source="test",
    )  # fmt: skip
    assert roofline_ns(10**9, 10, spec=spec) == pytest.approx(1e6), "compute bound: 1 ms"
    assert roofline_ns(10, 10**6, spec=spec) == pytest.approx(1e6), "memory bound: 1 ms"
    with pytest.raises(ConfigError):
        roofline_ns(1, 1, spec=spec, dtype="float8")
