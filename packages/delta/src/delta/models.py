"""Models delta trains: a small branchy net for tests, torchvision ResNets as block sequences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from effcore.errors import ConfigError

__all__ = ["MODELS", "BranchBlock", "ModelCase", "build_model", "resnet", "tiny_net"]


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
    """A model with its synthetic batch and loss: what ``delta`` commands and benchmarks train."""

    name: str
    model: nn.Module
    make_batch: Callable[[int, torch.Generator], tuple[torch.Tensor, ...]]
    loss: Callable[..., torch.Tensor]
    unit: str  # what the batch counts: samples, or residues for the Evoformer


def _classify(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def build_model(name: str, *, image_size: int = 224, device: torch.device | None = None) -> ModelCase:
    """``tiny``, ``resnet50``, ``resnet101`` or ``evoformer`` with synthetic inputs."""
    device = device or torch.device("cpu")
    if name == "tiny":
        model = tiny_net(depth=4, width=64).to(device)
        return ModelCase(name=name, model=model, unit="samples", loss=_classify,
                         make_batch=lambda n, g: (torch.randn(n, 64, generator=g).to(device),
                                                  torch.randint(0, 10, (n,), generator=g).to(device)))  # fmt: skip
    if name in ("resnet50", "resnet101"):
        if image_size < 32:
            raise ConfigError(f"--image-size must be at least 32 for a ResNet, got {image_size}")
        model = resnet(name).to(device)
        return ModelCase(name=name, model=model, unit="samples", loss=_classify,
                         make_batch=lambda n, g: (torch.randn(n, 3, image_size, image_size, generator=g).to(device),
                                                  torch.randint(0, 1000, (n,), generator=g).to(device)))  # fmt: skip
    if name == "evoformer":
        from delta.evoformer import evoformer_case

        return evoformer_case(device)
    raise ConfigError(f"unknown model {name!r}", hint=f"choose from {', '.join(MODELS)}")


MODELS = ("tiny", "resnet50", "resnet101", "evoformer")
