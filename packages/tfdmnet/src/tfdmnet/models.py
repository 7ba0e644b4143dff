"""TFDMNet mixtures: a config says which layers are spatial convolutions and which are EMLs; presets.

A network is a list of :class:`Conv`, :class:`Freq` (an EML) and :class:`Pool` specs plus a head.
:class:`TFDMNet` inserts the transforms where the domain changes, so any mixture builds: the paper's
(shallow layers spatial, deep layers in frequency), all-frequency CEMNet, or an all-spatial CNN.
:meth:`NetConfig.cnn_twin` turns every EML into the ``padding=k//2`` convolution it replaces: the CNN
of the same shape that results are compared against.

Presets (plain functions, ``PRESETS`` by name):

- ``lenet-cemnet``: the authors' MNIST network (``MNIST_CEMNet.py``): EMLs at 28x28 and 14x14
  (K=5, free weights, Weight Fixation), then FC 120-84 in space.
- ``lenet-tfdmnet``: the same LeNet as a TFDMNet mixture: conv1 spatial, conv2 an EML at 14x14.
- ``vgg16-mixture``: ``VGG16_mixture`` for CIFAR-10: convs 1-7 spatial; 8-10 EMLs at 4x4 (K=3) and
  11-13 at 2x2 (full 2x2 kernels), frequency pooling, complex FC 512.
- ``alexnet-mixture``: ``AlexNet_mixture`` for ImageNet: conv1 11x11/4 spatial, conv2 an EML at
  27x27 (K=5), conv3-5 EMLs at 13x13 (K=3).
- ``<name>-cnn``: the twin of each (``-cnn-matched``: with variance-matched dropout, see
  :meth:`NetConfig.cnn_twin`). Every preset takes ``width`` (a channel multiplier, for CPU recipes).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from effcore.errors import ConfigError
from tfdmnet.fused import FreqBlock
from tfdmnet.kernels.mixing import BACKENDS, Backend
from tfdmnet.layers import (
    CONVENTIONS,
    DROPOUT_MODES,
    EML,
    INITS,
    PARAMETRISATIONS,
    ComplexHead,
    Convention,
    DropoutMode,
    FreqBatchNorm,
    FreqDropout,
    FreqLeakyReLU,
    FreqMaxPool,
    FreqSpatialReLU,
    Init,
    Parametrisation,
    ToFreq,
    ToSpatial,
)
from tfdmnet.spectral import ANCHORS, FIX_MODES, SPECTRA, Anchor, FixMode, Spectrum

__all__ = [
    "EML_CHOICES",
    "PRESETS",
    "Conv",
    "EMLOptions",
    "Freq",
    "NetConfig",
    "Pool",
    "TFDMNet",
    "alexnet_mixture",
    "build_model",
    "get_preset",
    "lenet_cemnet",
    "lenet_tfdmnet",
    "vgg16_mixture",
]


@dataclass(kw_only=True, slots=True, frozen=True)
class Conv:
    """A spatial ``Conv2d -> BatchNorm2d -> ReLU (-> Dropout)`` block."""

    channels: int
    kernel: int = 3
    stride: int = 1
    padding: int | None = None  # default: kernel // 2 ("same" for odd kernels at stride 1)
    dropout: float = 0.0


@dataclass(kw_only=True, slots=True, frozen=True)
class Freq:
    """An ``EML -> FreqBatchNorm -> nonlinearity (-> FreqDropout)`` block in the frequency domain.

    ``twin_kernel`` is the kernel of the convolution it replaces in the CNN twin (default ``kernel``;
    VGG's conv11-13 learn full 2x2 spectra where the CNN has 3x3 kernels).
    """

    channels: int
    kernel: int = 3
    dropout: float = 0.0
    twin_kernel: int | None = None


@dataclass(kw_only=True, slots=True, frozen=True)
class Pool:
    """Max pooling (in the frequency domain: inverse FFT, pool, FFT)."""

    kernel: int = 2
    stride: int | None = None


Nonlinearity = Literal["leaky_relu", "spatial_relu", "none"]
NONLINEARITIES: tuple[str, ...] = get_args(Nonlinearity)


@dataclass(kw_only=True, slots=True, frozen=True)
class EMLOptions:
    """How every EML block of a network is built (the flags for the paper's unverified or variant details).

    ``spectrum="full"`` (default) is the authors' network: ``fft2`` feature maps, and the two-branch
    BatchNorm, LeakyReLU and dropout act on every bin of the ``H x W`` spectrum. ``"half"`` keeps the
    ``rfft2`` half (``H x (W//2+1)``): the EML itself is the same map at half the cost, but the nonlinear
    layers then act on one bin of each conjugate pair and the other bin follows as its mirror, which is
    a different network (see the README, "full or half spectrum").
    """

    parametrisation: Parametrisation = "spatial"
    spectrum: Spectrum = "full"
    convention: Convention = "torch"
    anchor: Anchor = "corner"
    nonlinearity: Nonlinearity = "leaky_relu"
    dropout_mode: DropoutMode = "gaussian"
    fix_mode: FixMode = "mask"
    init: Init = "he"
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        for name, allowed in EML_CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"EMLOptions.{name}={value!r} is not one of {', '.join(allowed)}")


EML_CHOICES: dict[str, tuple[str, ...]] = {
    "parametrisation": PARAMETRISATIONS,
    "spectrum": SPECTRA,
    "convention": CONVENTIONS,
    "anchor": ANCHORS,
    "nonlinearity": NONLINEARITIES,
    "dropout_mode": DROPOUT_MODES,
    "fix_mode": FIX_MODES,
    "init": INITS,
    "backend": BACKENDS,
}
"""The allowed values of every :class:`EMLOptions` field (what a ``[eml]`` table of a TOML may set)."""


Layer = Conv | Freq | Pool


@dataclass(kw_only=True, slots=True)
class NetConfig:
    """A whole network: input, layers, head; ``head_domain="frequency"`` uses :class:`ComplexHead`."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    layers: tuple[Layer, ...]
    head: tuple[int, ...] = ()
    head_dropout: float = 0.5
    head_domain: Literal["spatial", "frequency"] = "spatial"
    eml: EMLOptions = field(default_factory=EMLOptions)

    def __post_init__(self) -> None:
        if self.in_channels < 1 or self.image_size < 1 or self.num_classes < 2:
            raise ConfigError(
                f"{self.name}: in_channels, image_size must be >= 1 and num_classes >= 2 "
                f"(got {self.in_channels}, {self.image_size}, {self.num_classes})"
            )
        if self.head_domain not in ("spatial", "frequency"):
            raise ConfigError(f"{self.name}: head_domain={self.head_domain!r} is not spatial or frequency")
        if self.head_domain == "frequency" and len(self.head) != 1:
            raise ConfigError(f"{self.name}: a frequency head has exactly one hidden width, got {self.head}")
        if not self.layers:
            raise ConfigError(f"{self.name}: a network needs at least one layer")
        self.layers = tuple(self.layers)
        self.head = tuple(self.head)

    @property
    def has_eml(self) -> bool:
        return any(isinstance(layer, Freq) for layer in self.layers)

    def cnn_twin(self, *, dropout: Literal["same", "matched"] = "same") -> NetConfig:
        """The CNN of the same shape: every EML becomes a ``padding=k//2`` conv.

        ``dropout="same"`` gives each conv the EML's dropout rate ``p`` as ordinary (Bernoulli)
        dropout. ``"matched"`` gives it the rate whose multiplier has the variance of the EML's
        Gaussian noise ``N(1, (p/2)^2)``: ``p' = s / (1 + s)`` with ``s = (p/2)^2`` (0.06 for p = 0.5),
        so both networks are regularised alike.
        """
        if dropout not in ("same", "matched"):
            raise ConfigError(f"cnn_twin dropout={dropout!r} is not same or matched")

        def rate(p: float) -> float:
            return p if dropout == "same" else round((p / 2) ** 2 / (1 + (p / 2) ** 2), 4)

        layers = tuple(
            Conv(
                channels=layer.channels, kernel=layer.twin_kernel or layer.kernel, dropout=rate(layer.dropout)
            )
            if isinstance(layer, Freq)
            else layer
            for layer in self.layers
        )
        name = self.name.removesuffix("-mixture").removesuffix("-tfdmnet")
        suffix = "-cnn" if dropout == "same" else "-cnn-matched"
        return dataclasses.replace(self, name=f"{name}{suffix}", layers=layers, head_domain="spatial")

    def to_dict(self) -> dict[str, Any]:
        def layer(spec: Layer) -> dict[str, Any]:
            return {"type": type(spec).__name__.lower(), **dataclasses.asdict(spec)}

        return {
            "name": self.name,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "layers": [layer(spec) for spec in self.layers],
            "head": list(self.head),
            "head_dropout": self.head_dropout,
            "head_domain": self.head_domain,
            "eml": dataclasses.asdict(self.eml),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetConfig:
        kinds = {"conv": Conv, "freq": Freq, "pool": Pool}
        try:
            layers = tuple(
                kinds[d["type"]](**{k: v for k, v in d.items() if k != "type"}) for d in data["layers"]
            )
            return cls(
                name=data["name"],
                in_channels=data["in_channels"],
                image_size=data["image_size"],
                num_classes=data["num_classes"],
                layers=layers,
                head=tuple(data["head"]),
                head_dropout=data["head_dropout"],
                head_domain=data["head_domain"],
                eml=EMLOptions(**data["eml"]),
            )
        except (KeyError, TypeError) as err:
            raise ConfigError(f"not a tfdmnet network config ({type(err).__name__}: {err})") from None


def _scale(channels: int, width: float) -> int:
    if not (isinstance(width, int | float) and math.isfinite(width) and width > 0):
        raise ConfigError(
            f"width must be a positive number, got {width}", hint="e.g. 0.25: a quarter of the channels"
        )
    scaled = round(channels * width)
    if scaled < 1:
        raise ConfigError(
            f"width {width} leaves a {channels}-channel layer with no channels",
            hint=f"use a width above {0.5 / channels:.3g} for this preset",
        )
    return scaled


def _lenet(name: str, conv1: Layer, width: float, eml: EMLOptions) -> NetConfig:
    # LeNet-5 as in MNIST_CEMNet.py: 6 and 16 channels (K=5), FC 120-84 with BN and dropout 0.5.
    return NetConfig(
        name=name,
        in_channels=1,
        image_size=28,
        num_classes=10,
        layers=(conv1, Pool(), Freq(channels=_scale(16, width), kernel=5, dropout=0.4), Pool()),
        head=(_scale(120, width), _scale(84, width)),
        head_dropout=0.5,
        eml=eml,
    )


def lenet_cemnet(*, width: float = 1.0) -> NetConfig:
    """The authors' MNIST network: two EMLs (K=5, free weights, fixation), FC 120-84 in space."""
    first = Freq(channels=_scale(6, width), kernel=5, dropout=0.4)
    return _lenet("lenet-cemnet", first, width, EMLOptions(parametrisation="free"))


def lenet_tfdmnet(*, width: float = 1.0) -> NetConfig:
    """LeNet as a TFDMNet mixture: conv1 spatial at 28x28, conv2 an EML at 14x14 (K=5)."""
    return _lenet("lenet-tfdmnet", Conv(channels=_scale(6, width), kernel=5), width, EMLOptions())


def vgg16_mixture(*, width: float = 1.0) -> NetConfig:
    """``VGG16_mixture`` (CIFAR-10): convs 1-7 spatial, 8-13 EMLs, frequency pooling, complex FC 512."""
    c = [_scale(n, width) for n in (64, 128, 256, 512, 512)]
    return NetConfig(
        name="vgg16-mixture",
        in_channels=3,
        image_size=32,
        num_classes=10,
        layers=(
            Conv(channels=c[0], dropout=0.3),
            Conv(channels=c[0]),
            Pool(),
            Conv(channels=c[1], dropout=0.4),
            Conv(channels=c[1]),
            Pool(),
            Conv(channels=c[2], dropout=0.4),
            Conv(channels=c[2], dropout=0.4),
            Conv(channels=c[2]),
            Pool(),
            Freq(channels=c[3], kernel=3, dropout=0.5),
            Freq(channels=c[3], kernel=3, dropout=0.5),
            Freq(channels=c[3], kernel=3, dropout=0.5),
            Pool(),
            Freq(channels=c[4], kernel=2, dropout=0.5, twin_kernel=3),
            Freq(channels=c[4], kernel=2, dropout=0.5, twin_kernel=3),
            Freq(channels=c[4], kernel=2, dropout=0.5, twin_kernel=3),
            Pool(),
        ),
        head=(c[4],),
        head_dropout=0.5,
        head_domain="frequency",
    )


def alexnet_mixture(*, width: float = 1.0, num_classes: int = 1000) -> NetConfig:
    """``AlexNet_mixture`` (ImageNet, 224x224): conv1 spatial, conv2-5 EMLs at 27x27 and 13x13."""
    c = [_scale(n, width) for n in (96, 256, 384, 384, 256)]
    return NetConfig(
        name="alexnet-mixture",
        in_channels=3,
        image_size=224,
        num_classes=num_classes,
        layers=(
            Conv(channels=c[0], kernel=11, stride=4, padding=2),
            Pool(kernel=3, stride=2),
            Freq(channels=c[1], kernel=5),
            Pool(kernel=3, stride=2),
            Freq(channels=c[2], kernel=3),
            Freq(channels=c[3], kernel=3),
            Freq(channels=c[4], kernel=3),
            Pool(kernel=3, stride=2),
        ),
        head=(_scale(4096, width), _scale(4096, width)),
        head_dropout=0.5,
    )


def _twin(fn: Callable[..., NetConfig], dropout: str = "same") -> Callable[..., NetConfig]:
    def twin(**kw: Any) -> NetConfig:
        return fn(**kw).cnn_twin(dropout=dropout)

    twin.__doc__ = (
        f"The CNN twin of ``{fn.__name__}`` (same widths, EMLs as convolutions, {dropout} dropout)."
    )
    return twin


PRESETS: dict[str, Callable[..., NetConfig]] = {
    "lenet-tfdmnet": lenet_tfdmnet,
    "lenet-cemnet": lenet_cemnet,
    "lenet-cnn": _twin(lenet_tfdmnet),
    "lenet-cnn-matched": _twin(lenet_tfdmnet, "matched"),
    "vgg16-mixture": vgg16_mixture,
    "vgg16-cnn": _twin(vgg16_mixture),
    "vgg16-cnn-matched": _twin(vgg16_mixture, "matched"),
    "alexnet-mixture": alexnet_mixture,
    "alexnet-cnn": _twin(alexnet_mixture),
}


def get_preset(name: str, **kw: Any) -> NetConfig:
    """A preset by name (``width=`` scales the channels)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}", hint=f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name](**kw)


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


class TFDMNet(nn.Module):
    """A network built from a :class:`NetConfig`: named blocks in order, transforms where domains change.

    ``blocks`` is an ``nn.ModuleDict`` (``conv1``, ``pool2``, ``to_freq``, ``eml3``, ..., ``head``);
    ``block_info`` holds each block's domain and output shape, used by the op-count tables.
    """

    def __init__(self, cfg: NetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleDict()
        self.block_info: dict[str, dict[str, Any]] = {}
        opt = cfg.eml
        domain, size, ch = "spatial", (cfg.image_size, cfg.image_size), cfg.in_channels

        def add(name: str, module: nn.Module, kind: str, **info: Any) -> None:
            self.blocks[name] = module
            self.block_info[name] = {"kind": kind, "domain": domain, "channels": ch, "size": size, **info}

        n_layers, n_conv, n_pool, n_fft, n_ifft = len(cfg.layers), 0, 0, 0, 0
        for i, spec in enumerate(cfg.layers, start=1):
            # Blocks are numbered like the paper's layers: conv1..convK / emlK+1.., pool1..poolP.
            n_conv += not isinstance(spec, Pool)
            n_pool += isinstance(spec, Pool)
            if isinstance(spec, Conv):
                if domain == "frequency":
                    domain, n_ifft = "spatial", n_ifft + 1
                    add(f"to_spatial{n_ifft}", ToSpatial(size, opt.spectrum), "ifft")
                pad = spec.kernel // 2 if spec.padding is None else spec.padding
                out = (_conv_out(size[0], spec.kernel, spec.stride, pad),) * 2
                if min(out) < 1:
                    raise ConfigError(f"{cfg.name}: layer {i} (conv) shrinks a {size} map to nothing")
                mods: list[nn.Module] = [
                    nn.Conv2d(ch, spec.channels, spec.kernel, spec.stride, pad, bias=False),
                    nn.BatchNorm2d(spec.channels),
                    nn.ReLU(inplace=True),
                ]
                if spec.dropout:
                    mods.append(nn.Dropout(spec.dropout))
                in_ch, ch, size = ch, spec.channels, out
                add(f"conv{n_conv}", nn.Sequential(*mods), "conv", in_channels=in_ch, kernel=spec.kernel,
                    stride=spec.stride)  # fmt: skip
            elif isinstance(spec, Freq):
                if domain == "spatial":
                    domain, n_fft = "frequency", n_fft + 1
                    add(f"to_freq{n_fft}", ToFreq(opt.spectrum), "fft")
                eml = EML(
                    ch, spec.channels, size, spec.kernel,
                    parametrisation=opt.parametrisation, spectrum=opt.spectrum,
                    convention=opt.convention, anchor=opt.anchor, fix_mode=opt.fix_mode,
                    init=opt.init, backend=opt.backend,
                )  # fmt: skip
                mods = [eml, FreqBatchNorm(spec.channels)]
                if opt.nonlinearity == "leaky_relu":
                    mods.append(FreqLeakyReLU(0.2))
                elif opt.nonlinearity == "spatial_relu":
                    mods.append(FreqSpatialReLU(size, opt.spectrum))
                if spec.dropout:
                    mods.append(FreqDropout(spec.dropout, mode=opt.dropout_mode))
                in_ch, ch = ch, spec.channels
                add(f"eml{n_conv}", FreqBlock(*mods), "eml", in_channels=in_ch, kernel=spec.kernel)
            else:
                k, s = spec.kernel, spec.stride or spec.kernel
                if k > min(size):
                    raise ConfigError(f"{cfg.name}: layer {i} pools {k}x{k} over a {size} map")
                out = ((size[0] - k) // s + 1, (size[1] - k) // s + 1)
                nxt = cfg.layers[i] if i < n_layers else None
                spatial_next = isinstance(nxt, Conv) or (nxt is None and cfg.head_domain == "spatial")
                if domain == "frequency" and spatial_next:
                    # The next consumer is spatial: pool after the inverse FFT instead of a round trip.
                    n_ifft += 1
                    add(f"to_spatial{n_ifft}", ToSpatial(size, opt.spectrum), "ifft")
                    domain = "spatial"
                if domain == "frequency":
                    add(f"pool{n_pool}", FreqMaxPool(size, k, s, spectrum=opt.spectrum), "pool", out=out)
                else:
                    add(f"pool{n_pool}", nn.MaxPool2d(k, s), "pool")
                size = out
        if domain == "frequency" and cfg.head_domain == "spatial":
            n_ifft += 1
            add(f"to_spatial{n_ifft}", ToSpatial(size, opt.spectrum), "ifft")
            domain = "spatial"
        self.out_domain, self.out_size, self.out_channels = domain, size, ch
        self.blocks["head"] = self._head(cfg, domain, size, ch)
        self.block_info["head"] = {"kind": "head", "domain": cfg.head_domain, "channels": cfg.num_classes}

    def _head(self, cfg: NetConfig, domain: str, size: tuple[int, int], ch: int) -> nn.Module:
        if cfg.head_domain == "frequency":
            if domain != "frequency":
                raise ConfigError(f"{cfg.name}: a frequency head needs the last layers in frequency")
            h, wf = (size[0], size[1] // 2 + 1) if cfg.eml.spectrum == "half" else size
            return ComplexHead(ch * h * wf, cfg.head[0], cfg.num_classes, dropout=cfg.head_dropout,
                               dropout_mode=cfg.eml.dropout_mode)  # fmt: skip
        mods: list[nn.Module] = [nn.Flatten()]
        features = ch * size[0] * size[1]
        for width in cfg.head:
            mods += [nn.Linear(features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
            if cfg.head_dropout:
                mods.append(nn.Dropout(cfg.head_dropout))
            features = width
        mods.append(nn.Linear(features, cfg.num_classes))
        return nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        want = (self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ConfigError(
                f"{self.cfg.name} takes images of shape (N, {want[0]}, {want[1]}, {want[2]}), "
                f"got {tuple(x.shape)}",
                hint="resize the input or pick a preset built for this image size",
            )
        for block in self.blocks.values():
            x = block(x)
        return x

    def set_fused(self, fused: bool = True) -> TFDMNet:
        """Run every EML block's BN, LeakyReLU and dropout fused (default) or as the reference layers."""
        for module in self.modules():
            if isinstance(module, FreqBlock):
                module.fused = fused
        return self

    def emls(self) -> list[EML]:
        return [m for m in self.modules() if isinstance(m, EML)]

    @torch.no_grad()
    def fix_weights(self) -> int:
        """Weight Fixation on every free-parametrised EML; returns how many were projected."""
        n = 0
        for eml in self.emls():
            if eml.parametrisation == "free":
                eml.fix_weights()
                n += 1
        return n

    def num_parameters(self) -> int:
        return sum(math.prod(p.shape) for p in self.parameters())


def build_model(cfg: NetConfig | str, **kw: Any) -> TFDMNet:
    """A :class:`TFDMNet` from a config or a preset name (``kw`` go to the preset)."""
    return TFDMNet(get_preset(cfg, **kw) if isinstance(cfg, str) else cfg)
