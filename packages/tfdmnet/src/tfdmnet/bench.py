"""Side-by-side timing of an EML, ``conv2d`` and a plain ``torch.fft`` convolution (same run, alternating).

Methods (each computes the same-size output of a ``k x k`` convolution with ``C -> C`` channels):

- ``conv2d``: the peer, ``F.conv2d(x, w, padding=k//2)`` (oneDNN on CPU, cuDNN on GPU);
- ``eml``: our layer as a drop-in replacement for one conv: rfft2, EML, irfft2;
- ``eml_in_domain``: the EML alone on a spectrum, as it runs between frequency-domain layers;
- ``fft_conv``: an FFT convolution written the plain way: rfft2 of input and padded kernel, an
  ``einsum`` over non-contiguous spectra, irfft2.

``fwd`` times an inference forward (no autograd; the EML in eval mode, so its filter spectra are
computed once and cached, as a deployed layer would); ``fwd+bwd`` a training step's forward and
backward of ``out.sum()`` (the filters are transformed on every call, their gradient flows back).
Ratios are ``conv2d time / method time``: above 1 the method is faster than the convolution.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError
from tfdmnet.kernels.mixing import Backend
from tfdmnet.layers import EML
from tfdmnet.spectral import kernel_spectrum, to_freq, to_spatial

__all__ = ["METHODS", "bench_layers", "quartiles"]

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
    x: torch.Tensor, w: torch.Tensor, k: int, backend: Backend
) -> dict[str, tuple[Callable[[], torch.Tensor], list[torch.Tensor]]]:
    """Each method's call and the leaf tensors it differentiates."""
    size = tuple(x.shape[-2:])
    c = x.shape[1]
    eml = EML(c, w.shape[0], size, k, backend=backend).to(x.device)
    with torch.no_grad():
        eml.weight.copy_(w)
    eml.weight._owner = eml  # lets _time switch the layer between eval (inference) and train
    xf = to_freq(x.detach()).requires_grad_(x.requires_grad)

    def conv() -> torch.Tensor:
        return F.conv2d(x, w, padding=k // 2)

    def eml_full() -> torch.Tensor:
        return to_spatial(eml(to_freq(x)), size)

    def eml_dom() -> torch.Tensor:
        return eml(xf)

    def fft_conv() -> torch.Tensor:
        X = torch.fft.rfft2(x)
        Wf = kernel_spectrum(w, size)
        return torch.fft.irfft2(torch.einsum("nchw,ochw->nohw", X, Wf.conj()), s=size)

    return {
        "conv2d": (conv, [x, w]),
        "eml": (eml_full, [x, eml.weight]),
        "eml_in_domain": (eml_dom, [xf, eml.weight]),
        "fft_conv": (fft_conv, [x, w]),
    }


def _time(fn: Callable[[], torch.Tensor], leaves: list[torch.Tensor], mode: str, device) -> float:
    for leaf in leaves:  # the EML's weight: eval (cached filters) for inference, train for a step
        if isinstance(leaf, torch.nn.Parameter) and hasattr(leaf, "_owner"):
            leaf._owner.train(mode != "fwd")
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
    the median and IQR in ms and ``vs_conv2d`` = median conv2d time / median method time.
    """
    unknown = set(methods) - set(METHODS) or {m for m in modes if m not in ("fwd", "fwd+bwd")}
    if unknown:
        raise ConfigError(f"unknown bench method or mode {sorted(unknown)}", hint=f"methods: {METHODS}")
    if repeat < 1:
        raise ConfigError(f"--repeat must be >= 1, got {repeat}")
    device = torch.device(device)
    methods = ["conv2d", *[m for m in methods if m != "conv2d"]]
    rows: list[dict[str, Any]] = []
    for i, (n, c, hw, k) in enumerate(cases):
        if k > hw:
            raise ConfigError(f"bench case {n}x{c}x{hw}x{hw} with kernel {k}: the kernel exceeds the map")
        gen = torch.Generator().manual_seed(seed + i)
        x = torch.randn(n, c, hw, hw, generator=gen).to(device).requires_grad_(True)
        w = (torch.randn(c, c, k, k, generator=gen) / (c * k * k) ** 0.5).to(device).requires_grad_(True)
        calls = _methods(x, w, k, backend)
        for mode in modes:
            times: dict[str, list[float]] = {m: [] for m in methods}
            for _ in range(warmup):
                for m in methods:
                    _time(*calls[m], mode, device)
            for _ in range(repeat):
                for m in methods:
                    times[m].append(_time(*calls[m], mode, device))
            conv_median = statistics.median(times["conv2d"])
            for m in methods:
                q1, med, q3 = quartiles(times[m])
                rows.append({
                    "batch": n, "channels": c, "size": hw, "kernel": k, "mode": mode, "method": m,
                    "median_ms": med * 1e3, "iqr_ms": (q3 - q1) * 1e3, "vs_conv2d": conv_median / med,
                })  # fmt: skip
        if on_case:
            on_case(i + 1, len(cases))
    return rows
