"""Models delta trains: a small branchy net for tests, torchvision ResNets as block sequences, their batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from effcore.errors import ConfigError

__all__ = [
    "DATA",
    "MODELS",
    "BranchBlock",
    "ModelCase",
    "build_model",
    "check_options",
    "cifar10_batches",
    "resnet",
    "tiny_net",
]


class BranchBlock(nn.Module):
    """Two branches joined, a residual, optional dropout and in-place ops (the cases a runtime gets wrong)."""

    def __init__(self, width: int, *, dropout: float = 0.0, inplace: bool = True) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.inplace = inplace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.a(self.norm(x)))
        g1, g2 = self.b(x).chunk(2, dim=-1)  # views of one output: saved as non-contiguous slices
        y = self.drop(h * g1.sigmoid()) + g2.t().t() * h
        out = y + x
        return out.relu_() if self.inplace else out.relu()


def tiny_net(*, depth: int = 3, width: int = 32, classes: int = 10, dropout: float = 0.0, inplace: bool = True,
             seed: int = 0) -> nn.Sequential:  # fmt: skip
    """``depth`` :class:`BranchBlock` then a linear head, initialised from ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        blocks = [BranchBlock(width, dropout=dropout, inplace=inplace) for _ in range(depth)]
        return nn.Sequential(*blocks, nn.Linear(width, classes))
    finally:
        torch.random.set_rng_state(gen_state)


def resnet(name: str, *, classes: int = 1000, seed: int = 0) -> nn.Sequential:
    """torchvision's ``resnet50``/``resnet101`` (random init) as stem, bottlenecks and head in one Sequential:
    the same modules and the same function, cut where a recompute can rerun a block."""
    import torchvision

    builders = {"resnet50": torchvision.models.resnet50, "resnet101": torchvision.models.resnet101}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = builders[name](weights=None, num_classes=classes)
    finally:
        torch.random.set_rng_state(gen_state)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    layers = [block for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]
    head = nn.Sequential(net.avgpool, nn.Flatten(1), net.fc)
    return nn.Sequential(stem, *layers, head)


@dataclass(kw_only=True, slots=True)
class ModelCase:
    """A model with its batches and loss: what ``delta`` commands and benchmarks train."""

    name: str
    model: nn.Module
    make_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    loss: Callable[..., torch.Tensor]
    unit: str  # what the batch counts: samples, sequences, or residues for the Evoformer
    blocks: list[tuple[str, nn.Module]] | None = None  # the recompute units; None: delta.api.default_blocks


def _classify(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def cifar10_batches(
    image_size: int, device: torch.device
) -> Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]:
    """Batches of CIFAR-10 test images (drawn without replacement), upscaled to ``image_size`` (bilinear),
    normalised with the training set's statistics, and their labels."""
    from effcore.assets import load_cifar10

    data = load_cifar10("test")

    def make_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
        if n > len(data):
            raise ConfigError(f"batch {n} is larger than CIFAR-10's test split ({len(data)} images)")
        idx = torch.randperm(len(data), generator=gen)[:n]
        x = data.normalise(data.images[idx])
        if image_size != x.shape[-1]:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
        return x.to(device), data.labels[idx].to(device)

    return make_batch


def check_options(name: str, *, data: str | None, image_size: int | None, seq_len: int | None) -> str:
    """Refuse options that do not apply to model ``name`` (before any work); returns the data to use."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}", hint=f"choose from {', '.join(MODELS)}")
    choices = DATA[name]
    data = data or choices[0]
    if data not in choices:
        raise ConfigError(
            f"--data {data} does not apply to {name!r}", hint=f"choose from {', '.join(choices)}"
        )
    if image_size is not None:
        if not name.startswith("resnet"):
            raise ConfigError(f"--image-size applies to the ResNets only, not {name!r}")
        if image_size < 32:
            raise ConfigError(f"--image-size must be at least 32 for a ResNet, got {image_size}")
    if seq_len is not None:
        if name != "smollm2":
            raise ConfigError(f"--seq-len applies to smollm2 only, not {name!r}")
        if seq_len < 2:
            raise ConfigError(f"--seq-len must be at least 2 (one token to predict from, one to predict), "
                              f"got {seq_len}")  # fmt: skip
    return data


def build_model(name: str, *, image_size: int | None = None, data: str | None = None, seq_len: int | None = None,
                device: torch.device | None = None) -> ModelCase:  # fmt: skip
    """``tiny``, ``resnet50``, ``resnet101`` (synthetic or CIFAR-10 images, default side 224), ``evoformer``,
    or ``smollm2`` (WikiText-2, default 128 tokens per sequence); options are checked before any work."""
    data = check_options(name, data=data, image_size=image_size, seq_len=seq_len)
    device = device or torch.device("cpu")
    if name == "tiny":
        model = tiny_net(depth=4, width=64).to(device)
        return ModelCase(name=name, model=model, unit="samples", loss=_classify,
                         make_batch=lambda n, g: (torch.randn(n, 64, generator=g).to(device),
                                                  torch.randint(0, 10, (n,), generator=g).to(device)))  # fmt: skip
    if name in ("resnet50", "resnet101"):
        side = image_size or 224
        if data == "cifar10":
            make_batch = cifar10_batches(side, device)
            return ModelCase(name=name, model=resnet(name, classes=10).to(device), unit="samples", loss=_classify,
                             make_batch=make_batch)  # fmt: skip
        model = resnet(name).to(device)
        return ModelCase(name=name, model=model, unit="samples", loss=_classify,
                         make_batch=lambda n, g: (torch.randn(n, 3, side, side, generator=g).to(device),
                                                  torch.randint(0, 1000, (n,), generator=g).to(device)))  # fmt: skip
    if name == "smollm2":
        from delta.llm import smollm2_case

        return smollm2_case(seq_len=seq_len or 128, device=device)
    from delta.evoformer import evoformer_case

    return evoformer_case(device)


MODELS = ("tiny", "resnet50", "resnet101", "evoformer", "smollm2")
DATA: dict[str, tuple[str, ...]] = {
    "tiny": ("synthetic",),
    "resnet50": ("synthetic", "cifar10"),
    "resnet101": ("synthetic", "cifar10"),
    "evoformer": ("synthetic",),
    "smollm2": ("wikitext2",),
}
"""Each model's inputs, its default first: synthetic tensors, CIFAR-10 test images, WikiText-2 tokens."""
