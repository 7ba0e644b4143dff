"""Operation counts of EMLs and convolutions: analytic formulas and measured (``FlopCounterMode``) counts.

Conventions (the same in both, so a test can require them to agree exactly):

- FLOPs of matmul-like work only, as ``torch.utils.flop_counter`` counts a CNN: convolutions, linear
  layers, (batched) matmuls; elementwise work (BN, activations, dropout) is not counted.
- A real multiply-add is 2 FLOPs. A complex multiply-add is 8 (4 multiplies, 4 adds): we register a
  complex-aware ``bmm``/``mm`` formula, because the stock one counts any dtype as real.
- An FFT of ``n`` points costs ``5 n log2 n`` FLOPs (complex input, FFTW's convention) and half of
  that for a real-input or real-output transform (``rfft2``/``irfft2``); the stock counter has no FFT
  formulas, so we register ``_fft_r2c``, ``_fft_c2r`` and ``_fft_c2c``.
- "MACs" in tables are FLOPs / 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from effcore.errors import ConfigError
from tfdmnet.models import TFDMNet
from tfdmnet.spectral import Spectrum, freq_shape

__all__ = [
    "FLOP_FORMULAS",
    "conv_flops",
    "eml_flops",
    "fft2_flops",
    "measure_flops",
    "network_table",
    "sweep_table",
]


def _fft_flops(n: int, *, real: bool) -> float:
    return 0.0 if n <= 1 else (2.5 if real else 5.0) * n * math.log2(n)


def fft2_flops(size: tuple[int, int], *, real: bool, count: int = 1) -> int:
    """FLOPs of ``count`` 2-D FFTs of ``H x W`` points (``real``: rfft2/irfft2, else fft2/ifft2)."""
    h, w = size
    return round(count * _fft_flops(h * w, real=real))


def _raw(fn: Callable[..., int]) -> Callable[..., int]:
    fn._get_raw = True  # FlopCounterMode passes tensors, not shapes (we need dtypes and dims)
    return fn


def _transform_points(shape: Sequence[int], dims: Sequence[int]) -> tuple[int, int]:
    dims = [d % len(shape) for d in dims]
    n = math.prod(shape[d] for d in dims)
    return n, math.prod(shape) // max(1, n)


@_raw
def _r2c(x, dim, *args, out_val=None, **kwargs) -> int:
    n, batch = _transform_points(x.shape, dim)
    return round(batch * _fft_flops(n, real=True))


@_raw
def _c2r(x, dim, *args, out_val=None, **kwargs) -> int:
    n, batch = _transform_points(out_val.shape, dim)
    return round(batch * _fft_flops(n, real=True))


@_raw
def _c2c(x, dim, *args, out_val=None, **kwargs) -> int:
    n, batch = _transform_points(x.shape, dim)
    return round(batch * _fft_flops(n, real=False))


@_raw
def _bmm(a, b, *args, out_val=None, **kwargs) -> int:
    bsz, m, k = a.shape
    return (8 if a.is_complex() else 2) * bsz * m * k * b.shape[-1]


@_raw
def _mm(a, b, *args, out_val=None, **kwargs) -> int:
    m, k = a.shape
    return (8 if a.is_complex() else 2) * m * k * b.shape[-1]


aten = torch.ops.aten
FLOP_FORMULAS: dict[Any, Callable[..., int]] = {
    aten._fft_r2c: _r2c,
    aten._fft_c2r: _c2r,
    aten._fft_c2c: _c2c,
    aten.bmm: _bmm,
    aten.mm: _mm,
}


def measure_flops(fn: Callable[[], Any]) -> tuple[int, dict[str, int]]:
    """Run ``fn`` under ``FlopCounterMode`` with our FFT and complex formulas: (total, FLOPs per op)."""
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        fn()
    per_op = {str(op).split(".")[-1]: int(v) for op, v in counter.get_flop_counts().get("Global", {}).items()}
    return counter.get_total_flops(), per_op


def conv_flops(*, batch: int, cin: int, cout: int, out_size: tuple[int, int], kernel: int) -> int:
    """A ``Conv2d`` without bias: ``2 * N * Cout * Ho * Wo * Cin * k^2``."""
    return 2 * batch * cout * out_size[0] * out_size[1] * cin * kernel * kernel


def eml_flops(
    *,
    batch: int,
    cin: int,
    cout: int,
    size: tuple[int, int],
    spectrum: Spectrum = "half",
    input_fft: bool = True,
    output_ifft: bool = True,
    weight_transform: str = "none",
    kernel: int = 3,
) -> dict[str, int]:
    """FLOPs of an EML by part: the input FFT, the filters' transform, the channel mixing and the output
    inverse FFT; ``total`` sums the included parts.

    ``weight_transform`` (per forward in training; cached at inference): ``"none"``, ``"fft"`` (pad
    each ``k x k`` kernel to ``H x W`` and transform: the Triton path) or ``"dft"`` (two real GEMMs of
    the ``[F, k^2]`` DFT basis with the kernels: the CPU path, :func:`kernel_spectrum_conj_fm`).
    """
    if min(batch, cin, cout, *size) < 1:
        raise ConfigError(f"eml_flops needs positive sizes, got batch={batch} cin={cin} cout={cout} {size}")
    if weight_transform not in ("none", "fft", "dft"):
        raise ConfigError(f"weight_transform={weight_transform!r} is not none, fft or dft")
    real = spectrum == "half"
    h, w = freq_shape(size, spectrum)
    transform = {
        "none": 0,
        "fft": fft2_flops(size, real=real, count=cin * cout),
        "dft": 2 * 2 * h * w * kernel * kernel * cin * cout,
    }[weight_transform]
    parts = {
        "input_fft": fft2_flops(size, real=real, count=batch * cin) if input_fft else 0,
        "weight_transform": transform,
        "mixing": 8 * batch * h * w * cin * cout,
        "output_ifft": fft2_flops(size, real=real, count=batch * cout) if output_ifft else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


def _block_analytic(info: dict[str, Any], module: torch.nn.Module, spectrum: Spectrum) -> int | None:
    kind, n = info["kind"], 1
    if kind == "conv":
        return conv_flops(batch=n, cin=info["in_channels"], cout=info["channels"], out_size=info["size"],
                          kernel=info["kernel"])  # fmt: skip
    if kind == "eml":
        return eml_flops(batch=n, cin=info["in_channels"], cout=info["channels"], size=info["size"],
                         spectrum=spectrum, input_fft=False, output_ifft=False)["total"]  # fmt: skip
    real = spectrum == "half"
    if kind == "fft":
        return fft2_flops(info["size"], real=real, count=info["channels"])
    if kind == "ifft":
        return fft2_flops(info["size"], real=real, count=info["channels"])
    if kind == "pool":
        if info["domain"] != "frequency":
            return 0
        return fft2_flops(info["size"], real=real, count=info["channels"]) + fft2_flops(
            info["out"], real=real, count=info["channels"]
        )
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return sum(2 * m.in_features * m.out_features for m in linears)


@torch.no_grad()
def network_table(model: TFDMNet) -> list[dict[str, Any]]:
    """Inference FLOPs per block for one image: analytic and measured, with shapes; last row: total."""
    model = model.eval()
    cfg = model.cfg
    x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    for block in model.blocks.values():  # warm the EMLs' inference cache of filter spectra
        x = block(x)
    x = torch.zeros(1, cfg.in_channels, cfg.image_size, cfg.image_size)
    rows = []
    for name, block in model.blocks.items():
        info = model.block_info[name]
        out: list[torch.Tensor] = []
        measured, _ = measure_flops(lambda b=block, inp=x, sink=out: sink.append(b(inp)))
        x = out[0]
        analytic = _block_analytic(info, block, cfg.eml.spectrum)
        rows.append({
            "block": name, "kind": info["kind"], "domain": info["domain"],
            "out": "x".join(map(str, x.shape[1:])), "analytic_macs": analytic // 2,
            "measured_macs": measured // 2,
        })  # fmt: skip
    rows.append({
        "block": "total", "kind": "", "domain": "", "out": "",
        "analytic_macs": sum(r["analytic_macs"] for r in rows),
        "measured_macs": sum(r["measured_macs"] for r in rows),
    })  # fmt: skip
    return rows


def sweep_table(
    *,
    sizes: Sequence[int] = (4, 8, 14, 16, 28, 32, 64),
    kernels: Sequence[int] = (3, 5, 7),
    channels: Sequence[int] = (64,),
    spectrum: Spectrum = "half",
    measure: bool = True,
) -> list[dict[str, Any]]:
    """EML against the equivalent convolution, one image, per (size, kernel, channels).

    ``eml_in_domain`` is the channel mixing alone (an EML between frequency-domain layers);
    ``eml_standalone`` adds the input FFT and output inverse FFT (an EML replacing one conv in a CNN).
    With ``measure`` the standalone count is also measured on a real layer and must match.
    """
    from tfdmnet.layers import EML, ToFreq, ToSpatial

    rows = []
    for c in channels:
        for hw in sizes:
            for k in kernels:
                if k > hw:
                    continue
                conv = conv_flops(batch=1, cin=c, cout=c, out_size=(hw, hw), kernel=k)
                parts = eml_flops(batch=1, cin=c, cout=c, size=(hw, hw), spectrum=spectrum)
                row = {
                    "size": hw, "kernel": k, "channels": c, "conv_macs": conv // 2,
                    "eml_in_domain_macs": parts["mixing"] // 2, "eml_standalone_macs": parts["total"] // 2,
                    "conv_over_eml_in_domain": conv / parts["mixing"],
                    "conv_over_eml_standalone": conv / parts["total"],
                }  # fmt: skip
                if measure:
                    layer = torch.nn.Sequential(
                        ToFreq(spectrum), EML(c, c, hw, k, spectrum=spectrum, backend="torch"),
                        ToSpatial(hw, spectrum),
                    ).eval()  # fmt: skip
                    x = torch.zeros(1, c, hw, hw)
                    with torch.no_grad():
                        layer(x)  # caches the filter spectra, as at inference
                        row["eml_standalone_measured_macs"] = (
                            measure_flops(lambda f=layer, inp=x: f(inp))[0] // 2
                        )
                rows.append(row)
    return rows
