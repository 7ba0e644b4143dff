"""Training-side image handling for tfdmnet: batching and CIFAR augmentation.

The loaders (``ImageSet``, ``load_mnist``, ``load_cifar10``, ``load_dataset``) live in
:mod:`effcore.assets.images` (delta reads CIFAR-10 too) and are re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from effcore.assets.images import (
    CIFAR10_CLASSES,
    DATASETS,
    IMAGE_SHAPES,
    Dataset,
    ImageSet,
    load_cifar10,
    load_dataset,
    load_mnist,
)
from effcore.errors import ConfigError

__all__ = [  # noqa: RUF022 -- re-exported loaders first, then this module's own
    # from effcore.assets.images
    "CIFAR10_CLASSES",
    "DATASETS",
    "IMAGE_SHAPES",
    "Dataset",
    "ImageSet",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
    # training-side
    "augment_cifar",
    "batches",
]


def augment_cifar(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4) -> torch.Tensor:
    """The standard CIFAR augmentation on a uint8 batch: random ``pad``-pixel crop and horizontal flip."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]
    batch = torch.arange(n)[:, None, None, None]
    chan = torch.arange(images.shape[1])[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(uint8 images, labels)`` batches; shuffled with ``generator`` (deterministic per seed)."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield data.images[idx], data.labels[idx]
