"""tfdmnet's training-side data handling: batching, CIFAR augmentation; its loaders are effcore's."""

from __future__ import annotations

import pytest
import torch

import effcore.assets
from effcore.errors import ConfigError
from tfdmnet import data
from tfdmnet.data import augment_cifar, batches, load_mnist


def test_tfdmnet_loads_through_effcore_not_a_copy():
    for name in ("ImageSet", "load_mnist", "load_cifar10", "load_dataset", "DATASETS", "IMAGE_SHAPES"):
        assert getattr(data, name) is getattr(effcore.assets, name), name


def test_batches_cover_every_image_once_in_a_seeded_order(mnist_dir):
    data = load_mnist("test", data_dir=mnist_dir)
    seen = torch.cat(
        [y for _, y in batches(data, 32, shuffle=True, generator=torch.Generator().manual_seed(0))]
    )
    assert sorted(seen.tolist()) == sorted(data.labels.tolist())
    again = torch.cat(
        [y for _, y in batches(data, 32, shuffle=True, generator=torch.Generator().manual_seed(0))]
    )
    assert torch.equal(seen, again)
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        next(batches(data, 0))


def test_cifar_augmentation_crops_and_flips_deterministically():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).reshape(2, 3, 32, 32).to(torch.uint8)
    a = augment_cifar(x, torch.Generator().manual_seed(0))
    b = augment_cifar(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    big = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    out = augment_cifar(big, torch.Generator().manual_seed(1))
    # every output is a shifted (and maybe flipped) window of the zero-padded input
    assert (out == 0).float().mean() > (big == 0).float().mean()
