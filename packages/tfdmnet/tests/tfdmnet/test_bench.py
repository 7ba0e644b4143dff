"""The timing harness compares like with like: what each method recomputes per call, its rows."""

from __future__ import annotations

import pytest

import tfdmnet.bench as bench_mod
from effcore.errors import ConfigError
from tfdmnet.bench import METHODS, bench_layers
from tfdmnet.spectral import kernel_spectrum


@pytest.mark.parametrize(("mode", "per_call"), [("fwd", False), ("fwd+bwd", True)])
def test_fft_conv_caches_its_filter_spectra_exactly_when_the_eml_does(monkeypatch, mode, per_call):
    # Inference: both frequency-domain methods reuse spectra computed once (the EML through its
    # eval-mode cache); a training step: both transform their kernels on every call.
    calls = []

    def counting(*args, **kwargs):
        calls.append(1)
        return kernel_spectrum(*args, **kwargs)

    monkeypatch.setattr(bench_mod, "kernel_spectrum", counting)
    bench_layers([(2, 3, 6, 3)], modes=(mode,), methods=("fft_conv",), repeat=3, warmup=2)
    assert len(calls) == (5 if per_call else 1), f"{mode}: kernel spectrum computed {len(calls)} times"


def test_bench_rows_cover_every_method_and_mode():
    rows = bench_layers([(2, 3, 6, 3)], repeat=2, warmup=1)
    assert {(r["mode"], r["method"]) for r in rows} == {(m, x) for m in ("fwd", "fwd+bwd") for x in METHODS}
    assert all(0 < r["fastest_ms"] <= r["median_ms"] for r in rows)
    conv = [r for r in rows if r["method"] == "conv2d"]
    assert all(r["vs_conv2d"] == 1.0 and r["vs_conv2d_fastest"] == 1.0 for r in conv)


@pytest.mark.parametrize(
    ("cases", "match"),
    [([], "no bench case"), ([(2, 3, 4, 5)], "needs 1 <= kernel <= size"), ([(0, 3, 6, 3)], "batch >= 1")],
)
def test_degenerate_bench_cases_are_refused(cases, match):
    with pytest.raises(ConfigError, match=match):
        bench_layers(cases, repeat=1)
