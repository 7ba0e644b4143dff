"""Synthetic stand-ins for the data payload: a learnable MNIST-format npz and a small CIFAR-10 JPEG tar."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def blob_digits(n: int, *, seed: int, size: int = 28, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is where a bright 6x6 square sits (10 positions), plus noise: learnable fast."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n).astype(np.uint8)
    x = rng.integers(0, 60, (n, channels, size, size)).astype(np.uint8)
    step = (size - 6) // 4
    for i, c in enumerate(y):
        r, q = divmod(int(c), 4)
        x[i, :, 2 + r * step : 8 + r * step, 2 + q * step : 8 + q * step] = 250
    return (x[:, 0] if channels == 1 else x), y


@pytest.fixture
def mnist_dir(tmp_path: Path) -> Path:
    """A data dir holding mnist/mnist.npz with 300 train and 100 test synthetic digits."""
    (tmp_path / "mnist").mkdir()
    xtr, ytr = blob_digits(300, seed=0)
    xte, yte = blob_digits(100, seed=1)
    np.savez_compressed(tmp_path / "mnist" / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return tmp_path


@pytest.fixture
def cifar_dir(tmp_path: Path, monkeypatch) -> Path:
    """A data dir holding cifar10/cifar10_jpg.tar.gz with 3 train and 1 test JPEG per class."""
    from PIL import Image

    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cifar10").mkdir()
    rng = np.random.default_rng(0)
    with tarfile.open(tmp_path / "cifar10" / "cifar10_jpg.tar.gz", "w:gz") as tar:
        for split, count in (("test", 1), ("train", 3)):
            for cls in CLASSES:
                for i in range(count):
                    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3)).astype(np.uint8))
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=75)
                    info = tarfile.TarInfo(f"{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)
    return tmp_path
