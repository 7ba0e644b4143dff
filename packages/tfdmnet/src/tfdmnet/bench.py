"""Side-by-side timing of an EML, ``conv2d`` and a plain ``torch.fft`` convolution (same run, alternating).

Methods (each computes the same-size output of a ``k x k`` convolution with ``C -> C`` channels):

- ``conv2d``: the peer, ``F.conv2d(x, w, padding=k//2)`` (oneDNN on CPU, cuDNN on GPU);
- ``eml``: our layer as a drop-in replacement for one conv: rfft2, EML, irfft2;
- ``eml_in_domain``: the EML alone on a spectrum, as it runs between frequency-domain layers;
- ``fft_conv``: an FFT convolution written the plain way: rfft2 of input and padded kernel, an
  ``einsum`` over non-contiguous spectra, irfft2.

``fwd`` times an inference forward (no autograd): filter spectra are computed once and reused, by the
EML (eval mode caches them, as a deployed layer would) and by the plain FFT convolution alike.
``fwd+bwd`` times a training step's forward and backward of ``out.sum()``: both transform their
kernels on every call and the gradient flows back through the transform. The EML runs on the
``rfft2`` half spectrum (a lone EML is the same map on the full spectrum, at twice the mixing work).
Ratios are ``conv2d time / method time``: above 1 the method is faster than the convolution.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError
from tfdmnet.kernels.mixing import Backend
from tfdmnet.layers import EML
from tfdmnet.spectral import kernel_spectrum, to_freq, to_spatial

__all__ = ["METHODS", "bench_layers", "plot_bench", "quartiles"]

METHODS = ("conv2d", "eml", "eml_in_domain", "fft_conv")


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    """(q1, median, q3) of a sample (inclusive method; a single value repeats)."""
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _methods(
    x: torch.Tensor, w: torch.Tensor, k: int, backend: Backend, *, cached: bool
) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.Tensor]]]:
    """Each method's call and the leaf tensors it differentiates.

    ``cached`` (inference): both frequency-domain methods reuse filter spectra computed once, the EML
    through its eval-mode cache and the plain FFT convolution from a spectrum computed here; otherwise
    (a training step) both transform their kernels on every call.
    """
    size = tuple(x.shape[-2:])
    c = x.shape[1]
    eml = EML(c, w.shape[0], size, k, backend=backend).to(x.device).train(not cached)
    with torch.no_grad():
        eml.weight.copy_(w)
    xf = to_freq(x.detach()).requires_grad_(x.requires_grad)
    fixed = kernel_spectrum(w.detach(), size).conj() if cached else None

    def conv() -> torch.Tensor:
        return F.conv2d(x, w, padding=k // 2)

    def eml_full() -> torch.Tensor:
        return to_spatial(eml(to_freq(x)), size)

    def eml_dom() -> torch.Tensor:
        return eml(xf)

    def fft_conv() -> torch.Tensor:
        X = torch.fft.rfft2(x)
        Wc = fixed if fixed is not None else kernel_spectrum(w, size).conj()
        return torch.fft.irfft2(torch.einsum("nchw,ochw->nohw", X, Wc), s=size)

    return {
        "conv2d": (conv, [x, w]),
        "eml": (eml_full, [x, eml.weight]),
        "eml_in_domain": (eml_dom, [xf, eml.weight]),
        "fft_conv": (fft_conv, [x, w]),
    }


def _time(fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor], mode: str, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    if mode == "fwd":
        with torch.no_grad():
            fn()
    else:
        out = fn()
        (out.real.sum() if out.is_complex() else out.sum()).backward()
        for leaf in leaves:
            leaf.grad = None
    _sync(device)
    return time.perf_counter() - t0


def bench_layers(
    cases: Sequence[tuple[int, int, int, int]],
    *,
    modes: Sequence[str] = ("fwd", "fwd+bwd"),
    methods: Sequence[str] = METHODS,
    repeat: int = 10,
    warmup: int = 2,
    device: torch.device | str = "cpu",
    backend: Backend = "auto",
    seed: int = 0,
    on_case: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every method on every ``(batch, channels, size, kernel)`` case; one row per case, mode, method.

    Calls alternate between methods within each repeat so drift hits all of them alike. Each row has
    the median and IQR in ms and ``vs_conv2d`` = median conv2d time / median method time, and the
    fastest call with ``vs_conv2d_fastest`` (the steadier ratio on a machine shared with other jobs,
    where a median includes the calls that were preempted).
    """
    unknown = set(methods) - set(METHODS) or {m for m in modes if m not in ("fwd", "fwd+bwd")}
    if unknown:
        raise ConfigError(f"unknown bench method or mode {sorted(unknown)}", hint=f"methods: {METHODS}")
    if repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    if not cases:
        raise ConfigError("no bench case to run", hint="give at least one kernel no larger than a size")
    device = torch.device(device)
    methods = ["conv2d", *[m for m in methods if m != "conv2d"]]
    rows: list[dict[str, Any]] = []
    for i, (n, c, hw, k) in enumerate(cases):
        if min(n, c, hw, k) < 1 or k > hw:
            raise ConfigError(
                f"bench case {n}x{c}x{hw}x{hw} with kernel {k}: needs 1 <= kernel <= size, batch >= 1"
            )
        gen = torch.Generator().manual_seed(seed + i)
        x = torch.randn(n, c, hw, hw, generator=gen).to(device).requires_grad_(True)
        w = (torch.randn(c, c, k, k, generator=gen) / (c * k * k) ** 0.5).to(device).requires_grad_(True)
        for mode in modes:
            calls = _methods(x, w, k, backend, cached=mode == "fwd")
            times: dict[str, list[float]] = {m: [] for m in methods}
            for _ in range(warmup):
                for m in methods:
                    _time(*calls[m], mode, device)
            for _ in range(repeat):
                for m in methods:
                    times[m].append(_time(*calls[m], mode, device))
            conv_median, conv_fastest = statistics.median(times["conv2d"]), min(times["conv2d"])
            for m in methods:
                q1, med, q3 = quartiles(times[m])
                rows.append({
                    "batch": n, "channels": c, "size": hw, "kernel": k, "mode": mode, "method": m,
                    "median_ms": med * 1e3, "iqr_ms": (q3 - q1) * 1e3, "vs_conv2d": conv_median / med,
                    "fastest_ms": min(times[m]) * 1e3, "vs_conv2d_fastest": conv_fastest / min(times[m]),
                })  # fmt: skip
        if on_case:
            on_case(i + 1, len(cases))
    return rows


def plot_bench(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Speed ratios against conv2d per size, one panel per mode, one line per method and kernel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for method in ("eml", "eml_in_domain", "fft_conv"):
            for k in sorted({r["kernel"] for r in rows}):
                pts = sorted((r["size"], r["vs_conv2d"]) for r in rows
                             if r["mode"] == mode and r["method"] == method and r["kernel"] == k)  # fmt: skip
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=f"{method} k={k}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="feature-map size", ylabel="conv2d time / method time",
               title=mode)  # fmt: skip
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted({r["size"] for r in rows}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
