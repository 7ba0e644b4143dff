"""MNIST (npz) and CIFAR-10 (JPEG tar.gz) from effml's data directory, as uint8 tensors with their stats.

Images are kept as uint8 tensors and normalised per batch (:meth:`ImageSet.normalise`). CIFAR-10's
60,000 JPEGs are decoded once (about a minute) and cached as a uint8 npz under ``$EFFML_CACHE/images``,
keyed by the archive's size and mtime and written atomically; a corrupt cache is decoded again.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from effcore.assets.paths import cache_root, data_file
from effcore.errors import ConfigError, DataNotFoundError

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "IMAGE_SHAPES",
    "Dataset",
    "ImageSet",
    "load_cifar10",
    "load_dataset",
    "load_mnist",
]

MNIST_FILE = "mnist/mnist.npz"
CIFAR10_FILE = "cifar10/cifar10_jpg.tar.gz"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
Dataset = Literal["mnist", "cifar10"]
DATASETS: tuple[str, ...] = get_args(Dataset)
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {"mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
"""Each dataset's image shape ``(C, H, W)``: a model is checked against it before any data is loaded."""

# Per-channel mean and std of the training images (MNIST: the canonical 0.1307/0.3081; CIFAR-10:
# measured on these JPEG-decoded pixels, data README section 2).
_STATS = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)),
}

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class ImageSet:
    """One split: ``images`` uint8 ``(N, C, H, W)``, ``labels`` int64 ``(N,)``, normalisation stats."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float32, scaled to [0, 1] and standardised per channel."""
        x = images.float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def select(self, idx: torch.Tensor) -> ImageSet:
        """The images at ``idx``."""
        return ImageSet(self.name, self.images[idx], self.labels[idx], self.mean, self.std)

    def split(self, holdout: int, *, seed: int = 0) -> tuple[ImageSet, ImageSet]:
        """A seeded ``(rest, held_out)`` split with ``holdout`` images held out (for validation)."""
        if not 0 < holdout < len(self):
            raise ConfigError(f"cannot hold out {holdout} of {len(self)} images", hint="use 0 < holdout < N")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed + 7919))
        return self.select(idx[holdout:]), self.select(idx[:holdout])

    def subset(self, n: int | None, *, seed: int = 0) -> ImageSet:
        """A seeded random subset of ``n`` images (the files are sorted by label: never take a prefix)."""
        if n is None or n >= len(self):
            return self
        if n < 1:
            raise ConfigError(f"a subset needs at least 1 image, got {n}")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.select(idx)


def _malformed(path: Path, why: str) -> DataNotFoundError:
    return DataNotFoundError(
        f"{path} is not a valid dataset file ({why})",
        hint="restore it from the data payload and check it with `sha256sum -c SHA256SUMS`",
    )


def load_mnist(split: str = "train", *, data_dir: str | Path | None = None) -> ImageSet:
    """MNIST ``train`` (60,000) or ``test`` (10,000) from ``mnist/mnist.npz``."""
    if split not in ("train", "test"):
        raise ConfigError(f"MNIST has splits train and test, not {split!r}")
    path = data_file(MNIST_FILE, root=data_dir)
    try:
        with np.load(path) as npz:
            x, y = npz[f"x_{split}"], npz[f"y_{split}"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise _malformed(path, f"{type(err).__name__}: {err}") from None
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8 or y.shape != (x.shape[0],):
        raise _malformed(path, f"x_{split} {x.shape} {x.dtype}, y_{split} {y.shape}; want (N, 28, 28) uint8")
    if y.size and (y.min() < 0 or y.max() > 9):
        raise _malformed(path, f"labels outside 0..9 ({y.min()}..{y.max()})")
    mean, std = _STATS["mnist"]
    images = torch.from_numpy(np.ascontiguousarray(x)).unsqueeze(1)
    return ImageSet("mnist", images, torch.from_numpy(y.astype(np.int64)), mean, std)


def _decode_cifar(path: Path, progress: Progress | None) -> dict[str, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    out: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".jpg")]
            if not members:
                raise _malformed(path, "no .jpg members")
            for i, m in enumerate(members):
                parts = m.name.split("/")
                if len(parts) != 3 or parts[0] not in out or parts[1] not in CIFAR10_CLASSES:
                    raise _malformed(path, f"unexpected member {m.name!r}; want split/class/NNNN.jpg")
                fh = tar.extractfile(m)
                img = np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"))
                if img.shape != (32, 32, 3):
                    raise _malformed(path, f"{m.name} is {img.shape}, not 32x32 RGB")
                out[parts[0]][0].append(img)
                out[parts[0]][1].append(CIFAR10_CLASSES.index(parts[1]))
                if progress and (i % 500 == 0 or i + 1 == len(members)):
                    progress(i + 1, len(members))
    except (tarfile.TarError, OSError, EOFError, zlib.error, UnidentifiedImageError) as err:
        raise _malformed(path, f"{type(err).__name__}: {err}") from None
    arrays = {}
    for split, (imgs, labels) in out.items():
        if not imgs:
            raise _malformed(path, f"no {split} images")
        arrays[f"x_{split}"] = np.stack(imgs).transpose(0, 3, 1, 2).copy()
        arrays[f"y_{split}"] = np.asarray(labels, dtype=np.int64)
    return arrays


def _cifar_cache(path: Path) -> Path:
    st = path.stat()
    return cache_root() / "images" / f"cifar10-{st.st_size}-{int(st.st_mtime)}.npz"


def load_cifar10(
    split: str = "train", *, data_dir: str | Path | None = None, progress: Progress | None = None
) -> ImageSet:
    """CIFAR-10 ``train`` (50,000) or ``test`` (10,000) from the JPEG archive, decoded once and cached."""
    if split not in ("train", "test"):
        raise ConfigError(f"CIFAR-10 has splits train and test, not {split!r}")
    path = data_file(CIFAR10_FILE, root=data_dir)
    cache = _cifar_cache(path)
    arrays = None
    if cache.is_file():
        try:
            with np.load(cache) as npz:
                arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, zlib.error, EOFError):
            arrays = None  # a partial or corrupt cache: decode again
    if arrays is None:
        arrays = _decode_cifar(path, progress)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(cache)
    mean, std = _STATS["cifar10"]
    x = torch.from_numpy(arrays[f"x_{split}"])
    y = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return ImageSet("cifar10", x, y, mean, std)


def load_dataset(
    name: str, split: str, *, data_dir: str | Path | None = None, progress: Progress | None = None
) -> ImageSet:
    """``mnist`` or ``cifar10``, ``train`` or ``test``."""
    if name == "mnist":
        return load_mnist(split, data_dir=data_dir)
    if name == "cifar10":
        return load_cifar10(split, data_dir=data_dir, progress=progress)
    raise ConfigError(f"unknown dataset {name!r}", hint=f"choose one of {', '.join(DATASETS)}")
