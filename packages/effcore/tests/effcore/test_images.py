"""effcore.assets.images: MNIST and CIFAR-10 loading, the decoded cache, subsets; missing and malformed files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from effcore.assets import load_cifar10, load_dataset, load_mnist
from effcore.errors import ConfigError, DataNotFoundError
from effcore.testing.images import write_cifar10, write_mnist


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    return write_mnist(tmp_path)


@pytest.fixture
def cifar_dir(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    return write_cifar10(tmp_path)


def test_mnist_loads_uint8_images_and_labels(mnist_dir):
    train = load_mnist("train", data_dir=mnist_dir)
    assert train.images.shape == (300, 1, 28, 28) and train.images.dtype == torch.uint8
    assert train.labels.dtype == torch.int64 and len(train) == 300
    x = train.normalise(train.images[:4])
    assert x.dtype == torch.float32 and x.shape == (4, 1, 28, 28)


def test_missing_dataset_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"mnist/mnist.npz not found in .*--data-dir"):
        load_mnist(data_dir=tmp_path)
    with pytest.raises(DataNotFoundError, match=r"does not exist.*EFFML_DATA"):
        load_mnist(data_dir=tmp_path / "nowhere")


def test_malformed_mnist_is_reported_not_half_loaded(tmp_path):
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "mnist.npz").write_bytes(b"not a zip")
    with pytest.raises(DataNotFoundError, match="not a valid dataset file"):
        load_mnist(data_dir=tmp_path)
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=np.zeros((3, 32, 32), np.uint8),
             y_train=np.zeros(3, np.uint8))  # fmt: skip
    with pytest.raises(DataNotFoundError, match=r"want \(N, 28, 28\) uint8"):
        load_mnist(data_dir=tmp_path)


def test_cifar10_decodes_once_then_reads_the_cache(cifar_dir, tmp_path):
    calls = []
    train = load_cifar10("train", data_dir=cifar_dir, progress=lambda d, t: calls.append((d, t)))
    assert train.images.shape == (30, 3, 32, 32) and sorted(set(train.labels.tolist())) == list(range(10))
    assert calls and calls[-1] == (40, 40)
    calls.clear()
    test = load_cifar10("test", data_dir=cifar_dir, progress=lambda d, t: calls.append((d, t)))
    assert len(test) == 10 and not calls, "the second load reads the decoded cache"
    cache = next((tmp_path / "cache" / "images").glob("cifar10-*.npz"))
    cache.write_bytes(b"truncated")
    again = load_cifar10("train", data_dir=cifar_dir)
    assert torch.equal(again.images, train.images), "a corrupt cache is decoded again"


def test_cifar_archive_with_foreign_members_is_refused(tmp_path, monkeypatch):
    import tarfile

    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(tmp_path / "cifar10" / "cifar10_jpg.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("train/unicorn/0000.jpg")
        tar.addfile(info)
    with pytest.raises(DataNotFoundError, match=r"unexpected member 'train/unicorn/0000\.jpg'"):
        load_cifar10(data_dir=tmp_path)


def test_unknown_dataset_and_split_are_refused(mnist_dir):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet", "train", data_dir=mnist_dir)
    with pytest.raises(ConfigError, match="splits train and test"):
        load_mnist("valid", data_dir=mnist_dir)


def test_subset_is_seeded_and_not_a_prefix(mnist_dir):
    data = load_mnist("train", data_dir=mnist_dir)
    a, b = data.subset(50, seed=3), data.subset(50, seed=3)
    assert torch.equal(a.labels, b.labels) and len(a) == 50
    assert not torch.equal(a.images, data.images[:50])
