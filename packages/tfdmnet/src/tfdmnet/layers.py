"""Frequency-domain layers: the EML, two-branch BN and LeakyReLU, approximate dropout, pooling, transforms.

Every layer takes and returns a complex spectrum ``(N, C, H, W')`` (``W' = W//2 + 1`` for the half
spectrum), except :class:`ToFreq` (real in) and :class:`ToSpatial` (real out). Layers that must know
the spatial size (the EML, pooling, the inverse transform) are built with it and check their input.

Layers default to the half spectrum: a lone EML is the same linear map on either spectrum, the half at
half the work. Networks (:class:`tfdmnet.models.EMLOptions`) default to the full spectrum, because the
two-branch BN, LeakyReLU and dropout compute a different function on the half (README, "Full or half
spectrum"). On the full spectrum those layers break Hermitian symmetry; :class:`ToSpatial` and the
pooling keep the real part of ``ifft2``, as the authors' layers do.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from effcore.errors import ConfigError
from tfdmnet.kernels.mixing import BACKENDS, Backend, freq_mix, freq_mix_torch_fm, resolve_backend
from tfdmnet.spectral import (
    ANCHORS,
    FIX_MODES,
    SPECTRA,
    Anchor,
    FixMode,
    Spectrum,
    fix_spectrum,
    freq_shape,
    kernel_spectrum,
    kernel_spectrum_conj_fm,
    to_freq,
    to_spatial,
)

__all__ = [
    "EML",
    "ComplexHead",
    "FreqBatchNorm",
    "FreqDropout",
    "FreqLeakyReLU",
    "FreqMaxPool",
    "FreqSpatialReLU",
    "ToFreq",
    "ToSpatial",
]

Parametrisation = Literal["spatial", "free"]
Convention = Literal["torch", "tfdmnet"]
Init = Literal["he", "tfdmnet"]
DropoutMode = Literal["gaussian", "exact"]
PARAMETRISATIONS: tuple[str, ...] = get_args(Parametrisation)
CONVENTIONS: tuple[str, ...] = get_args(Convention)
INITS: tuple[str, ...] = get_args(Init)
DROPOUT_MODES: tuple[str, ...] = get_args(DropoutMode)


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h < 1 or w < 1:
        raise ConfigError(f"a feature-map size must be positive, got {h}x{w}")
    return int(h), int(w)


def _check_spectrum(x: torch.Tensor, what: str, channels: int | None, shape: tuple[int, int]) -> None:
    if not x.is_complex() or x.ndim != 4:
        raise ConfigError(
            f"{what} expects a complex spectrum (N, C, H, W'), got {x.dtype} {tuple(x.shape)}",
            hint="put ToFreq (rfft2) in front of frequency-domain layers",
        )
    if (channels is not None and x.shape[1] != channels) or tuple(x.shape[-2:]) != shape:
        want = f"{channels if channels is not None else 'C'} x {shape[0]} x {shape[1]}"
        raise ConfigError(
            f"{what} expects a spectrum of {want}, got {x.shape[1]} x {x.shape[2]} x {x.shape[3]}",
            hint="the input's spatial size or channel count differs from the layer's; build the layer "
            "with the input's size",
        )


class ToFreq(nn.Module):
    """Real ``(N, C, H, W)`` -> its spectrum (fp32, autocast off)."""

    def __init__(self, spectrum: Spectrum = "half") -> None:
        super().__init__()
        self.spectrum = spectrum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_freq(x, self.spectrum)

    def extra_repr(self) -> str:
        return f"spectrum={self.spectrum}"


class ToSpatial(nn.Module):
    """A spectrum -> the real ``(N, C, H, W)`` map of the given size."""

    def __init__(self, size: int | tuple[int, int], spectrum: Spectrum = "half") -> None:
        super().__init__()
        self.size = _pair(size)
        self.spectrum = spectrum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_spatial(x, self.size, self.spectrum)

    def extra_repr(self) -> str:
        return f"size={self.size}, spectrum={self.spectrum}"


class EML(nn.Module):
    """Element-wise Multiplication Layer: a convolution computed as per-frequency channel mixing.

    ``Y = sum_cin X[cin] * conj(K[cin, cout])`` (``convention="torch"``): exactly the circular
    ``conv2d`` of the spatial kernel (:func:`tfdmnet.spectral.circular_conv2d`). ``convention="tfdmnet"``
    computes the authors' ``conj(X) * K``, the same map mirrored in space.

    Parametrisations: ``"spatial"`` (TFDMNet) learns a ``k x k`` kernel, zero-padded and transformed on
    every forward (cached in eval mode under ``no_grad``); ``"free"`` (CEMNet) learns one complex
    ``H x W'`` filter per channel pair, initialised as the spectrum of a random ``k x k`` kernel and
    projected back onto ``k x k`` supports by :meth:`fix_weights` (Weight Fixation).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        size: int | tuple[int, int],
        kernel_size: int = 3,
        *,
        parametrisation: Parametrisation = "spatial",
        spectrum: Spectrum = "half",
        convention: Convention = "torch",
        anchor: Anchor = "corner",
        fix_mode: FixMode = "mask",
        bias: bool = False,
        init: Init = "he",
        backend: Backend = "auto",
    ) -> None:
        super().__init__()
        self.size = _pair(size)
        for name, value, allowed in (
            ("parametrisation", parametrisation, PARAMETRISATIONS),
            ("spectrum", spectrum, SPECTRA),
            ("convention", convention, CONVENTIONS),
            ("anchor", anchor, ANCHORS),
            ("fix_mode", fix_mode, FIX_MODES),
            ("init", init, INITS),
            ("backend", backend, BACKENDS),
        ):
            if value not in allowed:
                raise ConfigError(f"EML {name}={value!r} is not one of {', '.join(allowed)}")
        if in_channels < 1 or out_channels < 1:
            raise ConfigError(f"EML channels must be positive, got {in_channels} -> {out_channels}")
        if not 1 <= kernel_size <= min(self.size):
            raise ConfigError(
                f"EML kernel_size={kernel_size} does not fit its {self.size[0]}x{self.size[1]} input",
                hint=f"use 1 <= kernel_size <= {min(self.size)} (the whole map is the largest support)",
            )
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.parametrisation, self.spectrum, self.convention = parametrisation, spectrum, convention
        self.anchor, self.fix_mode, self.init, self.backend = anchor, fix_mode, init, backend
        self.freq_shape = freq_shape(self.size, spectrum)
        kernel = torch.empty(out_channels, in_channels, kernel_size, kernel_size)
        self._init_kernel(kernel)
        if parametrisation == "spatial":
            self.weight = nn.Parameter(kernel)
        else:
            spec = kernel_spectrum(kernel, self.size, spectrum=spectrum, anchor=anchor)
            # Stored as real (..., 2) so every optimizer and weight decay treat it as plain floats.
            self.weight = nn.Parameter(torch.view_as_real(spec).clone())
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def _init_kernel(self, kernel: torch.Tensor) -> None:
        if self.init == "he":
            nn.init.kaiming_normal_(kernel, nonlinearity="leaky_relu", a=0.2)
        else:  # the authors' RandomNormal(mean=0.5, stddev=2.0)
            nn.init.normal_(kernel, mean=0.5, std=2.0)

    def filter_spectrum(self) -> torch.Tensor:
        """The complex ``(out, in, H, W')`` filters this layer multiplies by."""
        if self.parametrisation == "free":
            return torch.view_as_complex(self.weight)
        return self._cached("full", kernel_spectrum)

    def _cached(self, kind: str, fn) -> torch.Tensor:
        # Training: transform the kernel on every forward. Inference with fixed weights: once (an
        # optimizer step, .to() or load_state_dict changes the version, device or dtype: recomputed).
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return fn(self.weight, self.size, spectrum=self.spectrum, anchor=self.anchor)
        # Keyed by inference mode too: a spectrum cached under ``torch.inference_mode`` is an inference
        # tensor, fine to read there but not to hand to a later ``no_grad`` forward's in-place ops.
        key = (
            kind,
            self.weight._version,
            self.weight.device,
            self.weight.dtype,
            torch.is_inference_mode_enabled(),
        )
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, fn(self.weight, self.size, spectrum=self.spectrum, anchor=self.anchor))
        return self._cache[1]

    def spatial_kernel(self) -> torch.Tensor:
        """The real ``(out, in, H, W)`` spatial filters (``k x k`` support after fixation)."""
        with torch.no_grad():
            return to_spatial(self.filter_spectrum().detach(), self.size, self.spectrum)

    @torch.no_grad()
    def fix_weights(self) -> None:
        """Weight Fixation (free parametrisation only; a spatial kernel already has ``k x k`` support)."""
        if self.parametrisation != "free":
            return
        fixed = fix_spectrum(
            torch.view_as_complex(self.weight),
            self.size,
            self.kernel_size,
            spectrum=self.spectrum,
            anchor=self.anchor,
            mode=self.fix_mode,
        )
        self.weight.copy_(torch.view_as_real(fixed))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_spectrum(x, "EML", self.in_channels, self.freq_shape)
        if self.parametrisation == "spatial" and resolve_backend(self.backend, x.device) == "torch":
            # CPU path: the conjugate filters straight in frequency-major layout (a DFT of the k x k
            # support), then one complex bmm.
            wt = self._cached("conj_fm", kernel_spectrum_conj_fm)
            y = freq_mix_torch_fm(x, wt if wt.dtype == x.dtype else wt.to(x.dtype))
        else:
            wf = self.filter_spectrum()
            y = freq_mix(x, wf if wf.dtype == x.dtype else wf.to(x.dtype), backend=self.backend)
        if self.convention == "tfdmnet":
            # conj(X) * K == conj(X * conj(K)) for the authors' conjugate-on-input form.
            y = y.conj()
        if self.bias is not None:
            # A spatial bias b adds b * H * W at DC of an unnormalised DFT.
            dc = torch.zeros_like(y[0, :, :, :])
            dc[:, 0, 0] = self.bias.to(dc.real.dtype) * (self.size[0] * self.size[1])
            y = y + dc
        return y

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, size={self.size}, kernel_size={self.kernel_size}, "
            f"parametrisation={self.parametrisation}, spectrum={self.spectrum}, convention={self.convention}"
        )


class FreqBatchNorm(nn.Module):
    """Two-branch batch normalisation: independent ``BatchNorm2d`` on the real and the imaginary parts."""

    def __init__(self, channels: int, *, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.bn_re = nn.BatchNorm2d(channels, momentum=momentum, eps=eps)
        self.bn_im = nn.BatchNorm2d(channels, momentum=momentum, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.complex(self.bn_re(x.real), self.bn_im(x.imag))


class FreqLeakyReLU(nn.Module):
    """The frequency-domain nonlinearity of the authors' EMLs: LeakyReLU on real and imaginary parts."""

    def __init__(self, negative_slope: float = 0.2) -> None:
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.negative_slope
        return torch.complex(F.leaky_relu(x.real, s), F.leaky_relu(x.imag, s))

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class FreqSpatialReLU(nn.Module):
    """The authors' ``ComplexBNormReLULayer`` nonlinearity: inverse FFT, ReLU, FFT."""

    def __init__(self, size: int | tuple[int, int], spectrum: Spectrum = "half") -> None:
        super().__init__()
        self.size = _pair(size)
        self.spectrum = spectrum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_freq(F.relu(to_spatial(x, self.size, self.spectrum)), self.spectrum)


class FreqDropout(nn.Module):
    """Approximate dropout in the frequency domain (training only; eval is the identity, deterministic).

    ``mode="gaussian"`` (``ComplexDropoutLayer_approx``): real and imaginary parts are multiplied by
    independent ``N(1, (p/2)^2)`` noise. ``mode="exact"`` (``ComplexDropoutLayer``): inverted dropout
    with rate ``p`` on the real or the imaginary part, chosen by a coin flip per call.
    ``relu_noise`` adds the authors' "approximated ReLU" factor ``N(1, (relu_noise)^2)``; unlike their
    code, which keeps it at test time (random predictions), it is applied in training only.
    Works on any shape (feature maps or the head's vectors).
    """

    def __init__(self, p: float = 0.5, *, mode: DropoutMode = "gaussian", relu_noise: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout rate must be in [0, 1), got {p}")
        if mode not in DROPOUT_MODES:
            raise ConfigError(f"FreqDropout mode={mode!r} is not one of {', '.join(DROPOUT_MODES)}")
        self.p, self.mode, self.relu_noise = p, mode, relu_noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.p == 0.0 and self.relu_noise == 0.0):
            return x
        re, im = x.real, x.imag
        if self.mode == "gaussian":
            std = self.p / 2
            re = re * (1 + std * torch.randn_like(re))
            im = im * (1 + std * torch.randn_like(im))
        elif bool(torch.rand(()) > 0.5):
            re = F.dropout(re, self.p, training=True)
        else:
            im = F.dropout(im, self.p, training=True)
        if self.relu_noise:
            re = re * (1 + self.relu_noise * torch.randn_like(re))
            im = im * (1 + self.relu_noise * torch.randn_like(im))
        return torch.complex(re, im)

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}" + (
            f", relu_noise={self.relu_noise}" if self.relu_noise else ""
        )


class FreqMaxPool(nn.Module):
    """Max pooling of a spectrum as the authors do it: inverse FFT, ``max_pool2d``, FFT."""

    def __init__(
        self,
        size: int | tuple[int, int],
        kernel_size: int = 2,
        stride: int | None = None,
        *,
        spectrum: Spectrum = "half",
    ) -> None:
        super().__init__()
        self.size = _pair(size)
        self.kernel_size, self.stride = kernel_size, stride or kernel_size
        self.spectrum = spectrum
        if kernel_size > min(self.size):
            raise ConfigError(f"a {kernel_size}x{kernel_size} pool does not fit a {self.size} map")

    @property
    def out_size(self) -> tuple[int, int]:
        k, s = self.kernel_size, self.stride
        return ((self.size[0] - k) // s + 1, (self.size[1] - k) // s + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = to_spatial(x, self.size, self.spectrum)
        return to_freq(F.max_pool2d(spatial, self.kernel_size, self.stride), self.spectrum)

    def extra_repr(self) -> str:
        return f"size={self.size}, kernel_size={self.kernel_size}, stride={self.stride}"


class ComplexHead(nn.Module):
    """The authors' complex classifier: separate Linear + BN + LeakyReLU(0.2) on the flattened real
    and imaginary parts, approximate dropout, concatenation, then one Linear to the classes."""

    def __init__(
        self,
        in_features: int,
        hidden: int,
        num_classes: int,
        *,
        dropout: float = 0.5,
        dropout_mode: DropoutMode = "gaussian",
    ) -> None:
        super().__init__()
        self.fc_re = nn.Linear(in_features, hidden)
        self.fc_im = nn.Linear(in_features, hidden)
        self.bn_re = nn.BatchNorm1d(hidden)
        self.bn_im = nn.BatchNorm1d(hidden)
        self.drop = FreqDropout(dropout, mode=dropout_mode)
        self.out = nn.Linear(2 * hidden, num_classes)
        nn.init.kaiming_uniform_(self.out.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        re = F.leaky_relu(self.bn_re(self.fc_re(x.real.flatten(1))), 0.2)
        im = F.leaky_relu(self.bn_im(self.fc_im(x.imag.flatten(1))), 0.2)
        if re.dtype in (torch.float16, torch.bfloat16):
            # Under autocast the Linear outputs are bf16/fp16, which complex tensors cannot hold.
            re, im = re.float(), im.float()
        z = self.drop(torch.complex(re, im))
        return self.out(torch.cat([z.real, z.imag], dim=1))
