"""Small stand-ins for the image datasets in a data directory: a CIFAR-10 JPEG archive and an MNIST npz."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np

from effcore.assets.images import CIFAR10_CLASSES

__all__ = ["write_cifar10", "write_mnist"]


def write_cifar10(root: Path, *, train: int = 3, test: int = 1, seed: int = 0) -> Path:
    """``root/cifar10/cifar10_jpg.tar.gz`` with ``train`` and ``test`` random 32x32 JPEGs per class, in
    the payload's layout (``split/class/NNNN.jpg``); returns ``root``."""
    from PIL import Image

    (root / "cifar10").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with tarfile.open(root / "cifar10" / "cifar10_jpg.tar.gz", "w:gz") as tar:
        for split, count in (("test", test), ("train", train)):
            for cls in CIFAR10_CLASSES:
                for i in range(count):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)).save(
                        buf, format="JPEG"
                    )
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return root


def write_mnist(root: Path, *, train: int = 300, test: int = 100, seed: int = 0) -> Path:
    """``root/mnist/mnist.npz`` with random 28x28 uint8 digits and labels 0..9; returns ``root``."""
    rng = np.random.default_rng(seed)
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", train), ("test", test)):
        arrays[f"x_{split}"] = rng.integers(0, 255, (n, 28, 28)).astype(np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, n).astype(np.uint8)
    np.savez_compressed(root / "mnist" / "mnist.npz", **arrays)
    return root
