"""FFT conventions of effml's frequency-domain layers: transforms, kernel spectra and Weight Fixation.

Conventions (tested in ``tests/tfdmnet/test_spectral.py``):

- Transforms are unnormalised 2-D DFTs over the last two dims (``norm="backward"``), computed in fp32
  with autocast off (half-precision FFTs are CUDA-only and limited to powers of two, see
  ``../shared/papers/tfdmnet.md`` section 4).
- ``spectrum="half"`` (default) keeps the Hermitian half ``rfft2(x)`` of shape ``H x (W//2 + 1)``;
  ``spectrum="full"`` keeps ``fft2(x)`` (``H x W``), as the authors' TensorFlow code does.
- A spatial ``k x k`` kernel becomes an ``H x W`` filter by zero padding; ``anchor="corner"`` puts
  tap (0, 0) at offset (0, 0) (the authors' top-left padding), ``anchor="center"`` puts tap
  (k//2, k//2) there, which lines a frequency layer up with a ``padding=k//2`` convolution.
- ``X * conj(K)`` is the spectrum of the circular cross-correlation ``y(m) = sum_t w(t) x(m + t)``,
  i.e. PyTorch's ``conv2d`` on a circularly padded input (see :func:`circular_conv2d`).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError

__all__ = [
    "Anchor",
    "FixMode",
    "Spectrum",
    "circular_conv2d",
    "fix_spectrum",
    "freq_shape",
    "kernel_spectrum",
    "kernel_spectrum_conj_fm",
    "pad_kernel",
    "support_mask",
    "to_freq",
    "to_spatial",
]

Spectrum = Literal["full", "half"]
Anchor = Literal["corner", "center"]
FixMode = Literal["mask", "mass"]

SPECTRA: tuple[str, ...] = get_args(Spectrum)
ANCHORS: tuple[str, ...] = get_args(Anchor)
FIX_MODES: tuple[str, ...] = get_args(FixMode)


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")


def freq_shape(size: tuple[int, int], spectrum: Spectrum = "half") -> tuple[int, int]:
    """The spectrum's last two dims for a spatial ``size``: ``(H, W//2 + 1)`` (half) or ``(H, W)``."""
    _check("spectrum", spectrum, SPECTRA)
    h, w = size
    return (h, w // 2 + 1) if spectrum == "half" else (h, w)


def to_freq(x: torch.Tensor, spectrum: Spectrum = "half") -> torch.Tensor:
    """The 2-D spectrum of a real ``(..., H, W)`` tensor, in complex64 (complex128 for float64 input)."""
    _check("spectrum", spectrum, SPECTRA)
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x if x.dtype == torch.float64 else x.float()
        return torch.fft.rfft2(x) if spectrum == "half" else torch.fft.fft2(x)


def to_spatial(X: torch.Tensor, size: tuple[int, int], spectrum: Spectrum = "half") -> torch.Tensor:
    """The real ``(..., H, W)`` signal of a spectrum (``size`` is needed: an odd width is not recoverable).

    For ``spectrum="full"`` the real part of ``ifft2`` is kept, as the authors' pooling layers do.
    """
    _check("spectrum", spectrum, SPECTRA)
    expected = freq_shape(size, spectrum)
    if tuple(X.shape[-2:]) != expected:
        raise ConfigError(
            f"a {spectrum} spectrum of a {size[0]}x{size[1]} map has shape {expected[0]}x{expected[1]}, "
            f"got {X.shape[-2]}x{X.shape[-1]}",
            hint="the layer's size does not match its input; rebuild the model for this input size",
        )
    # A frequency-major spectrum (the EML's and the fused block's (H, W', N, C) memory) is transposed
    # first: the inverse FFT over its outermost dims took 1.3x as long as the transpose plus a
    # contiguous one (256 x 16 x 14 x 14, CPU).
    X = X.contiguous()
    with torch.autocast(device_type=X.device.type, enabled=False):
        if spectrum == "half":
            return torch.fft.irfft2(X, s=size)
        return torch.fft.ifft2(X).real


def pad_kernel(w: torch.Tensor, size: tuple[int, int], anchor: Anchor = "corner") -> torch.Tensor:
    """Zero-pad a ``(..., k, k)`` kernel to ``(..., H, W)``, anchored as ``anchor`` says."""
    _check("anchor", anchor, ANCHORS)
    kh, kw = w.shape[-2:]
    h, wd = size
    if kh > h or kw > wd:
        raise ConfigError(
            f"a {kh}x{kw} kernel does not fit a {h}x{wd} feature map",
            hint=f"use kernel_size <= {min(h, wd)} for this layer (the full map is the largest support)",
        )
    padded = F.pad(w, (0, wd - kw, 0, h - kh))
    if anchor == "center":
        padded = torch.roll(padded, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return padded


def kernel_spectrum(
    w: torch.Tensor, size: tuple[int, int], *, spectrum: Spectrum = "half", anchor: Anchor = "corner"
) -> torch.Tensor:
    """The ``H x W`` filter spectrum of a spatial ``(..., k, k)`` kernel (TFDMNet's parametrisation)."""
    return to_freq(pad_kernel(w, size, anchor), spectrum)


@lru_cache(maxsize=64)
def _dft_basis(
    size: tuple[int, int], k: int, anchor: str, spectrum: str, device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    # cos and sin of the phase -2 pi (u i / H + v j / W) for every frequency (u, v) and kernel tap
    # (i, j) (shifted by k//2 for the centre anchor): shape [F, k*k], frequencies in rfft2/fft2 order.
    # Built outside inference mode even when first asked for under it: this cache outlives the call,
    # and an inference tensor here would make every later training step fail ("Inference tensors
    # cannot be saved for backward").
    with torch.inference_mode(False):
        return _basis(size, k, anchor, spectrum, device, dtype)


def _basis(
    size: tuple[int, int], k: int, anchor: str, spectrum: str, device: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = size
    fh, fw = freq_shape(size, spectrum)
    off = k // 2 if anchor == "center" else 0
    taps = torch.arange(k, dtype=torch.float64) - off
    rows = -2 * math.pi * torch.arange(fh, dtype=torch.float64)[:, None] * taps[None, :] / h  # [fh, k]
    cols = -2 * math.pi * torch.arange(fw, dtype=torch.float64)[:, None] * taps[None, :] / w  # [fw, k]
    phase = (rows[:, None, :, None] + cols[None, :, None, :]).reshape(fh * fw, k * k)
    return phase.cos().to(device=device, dtype=dtype), phase.sin().to(device=device, dtype=dtype)


def kernel_spectrum_conj_fm(
    w: torch.Tensor, size: tuple[int, int], *, spectrum: Spectrum = "half", anchor: Anchor = "corner"
) -> torch.Tensor:
    """``conj`` of :func:`kernel_spectrum`, laid out frequency-major ``[F, in, out]``.

    Computed as a DFT of the ``k x k`` support only (two real GEMMs against a cached ``[F, k^2]``
    basis) instead of padding to ``H x W`` and transforming: no padding, no FFT plan, and the result
    comes out in the layout the channel mixing multiplies by (3-4x faster than pad + rfft2 + permute
    on CPU, forward and backward, for 3x3 kernels).
    """
    _check("spectrum", spectrum, SPECTRA)
    _check("anchor", anchor, ANCHORS)
    o, c, kh, kw = w.shape
    if kh != kw:
        raise ConfigError(f"kernel_spectrum_conj_fm needs square kernels, got {kh}x{kw}")
    pad_kernel(w[:1, :1], size, anchor)  # the size check, with its error message
    dtype = w.dtype if w.dtype == torch.float64 else torch.float32
    cos, sin = _dft_basis(tuple(size), kh, anchor, spectrum, str(w.device), dtype)
    with torch.autocast(device_type=w.device.type, enabled=False):  # spectra stay fp32 under AMP
        taps = w.to(dtype).permute(2, 3, 1, 0).reshape(kh * kw, c * o)
        return torch.complex(cos @ taps, -(sin @ taps)).view(-1, c, o)


def support_mask(
    size: tuple[int, int], kernel_size: int, *, anchor: Anchor = "corner", device: torch.device | None = None
) -> torch.Tensor:
    """A float ``(H, W)`` mask: 1 on the ``k x k`` spatial support of a kernel, 0 elsewhere."""
    ones = torch.ones(kernel_size, kernel_size, device=device)
    return pad_kernel(ones, size, anchor)


def fix_spectrum(
    Wf: torch.Tensor,
    size: tuple[int, int],
    kernel_size: int,
    *,
    spectrum: Spectrum = "half",
    anchor: Anchor = "corner",
    mode: FixMode = "mask",
) -> torch.Tensor:
    """Weight Fixation: project free ``(..., H, W')`` filter spectra onto spectra of ``k x k`` kernels.

    ``mode="mask"`` is CEMNet's projection (inverse FFT, keep the real part on the support, FFT).
    ``mode="mass"`` is TFDMNet's ``isFeatFix`` variant: first spread the mean of the out-of-support
    mass (its sum over the map divided by ``k^2``) over every position, then mask. Both are idempotent.
    """
    _check("mode", mode, FIX_MODES)
    w_time = to_spatial(Wf, size, spectrum)
    mask = support_mask(size, kernel_size, anchor=anchor, device=Wf.device).to(w_time.dtype)
    if mode == "mass":
        outside = (w_time * (1 - mask)).sum(dim=(-2, -1), keepdim=True)
        w_time = w_time + outside / (kernel_size * kernel_size)
    return to_freq(w_time * mask, spectrum)


def circular_conv2d(x: torch.Tensor, w: torch.Tensor, *, anchor: Anchor = "corner") -> torch.Tensor:
    """The spatial twin of an EML: ``conv2d`` (cross-correlation) with circular padding, same size out.

    ``anchor="corner"`` computes ``y(m) = sum_t w(t) x(m + t)``; ``"center"`` shifts by ``k//2``.
    """
    _check("anchor", anchor, ANCHORS)
    kh, kw = w.shape[-2:]
    if anchor == "corner":
        pad = (0, kw - 1, 0, kh - 1)
    else:
        pad = (kw // 2, kw - 1 - kw // 2, kh // 2, kh - 1 - kh // 2)
    h, wd = x.shape[-2:]
    if kh > h or kw > wd:
        raise ConfigError(f"a {kh}x{kw} kernel does not fit a {h}x{wd} feature map")
    return F.conv2d(F.pad(x, pad, mode="circular"), w)
