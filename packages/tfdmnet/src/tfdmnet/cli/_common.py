"""The ``tfdmnet`` app and what its commands share: option types, preset and spectrum helpers.

Help texts list the presets, recipes, spectra and back ends from their registries, so they cannot
drift from what the commands accept; square brackets are escaped (help is rich markup).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import make_app
from effcore.errors import ConfigError
from effcore.io import check_writable
from tfdmnet.models import PRESETS, NetConfig
from tfdmnet.spectral import SPECTRA

app = make_app(
    "tfdmnet",
    "TFDMNet: convolutions replaced by element-wise multiplications in the frequency domain (EMLs).\n\n"
    "[bold]tfdmnet models[/]: the presets, their parameters and MACs\n\n"
    "[bold]tfdmnet train[/] -m lenet-tfdmnet --run-dir runs/a: MNIST, ~10 min on one CPU core\n\n"
    "[bold]tfdmnet train[/] -m lenet-cnn --run-dir runs/b: its CNN twin, same recipe\n\n"
    "[bold]tfdmnet eval[/] --run-dir runs/a: test accuracy of a checkpoint\n\n"
    "[bold]tfdmnet ops[/] -m vgg16-mixture: per-layer op counts against the CNN twin\n\n"
    "[bold]tfdmnet bench[/]: EML vs conv2d vs a plain FFT convolution, timed\n\n"
    "Data: --data-dir, $EFFML_DATA or ../shared/data (mnist/mnist.npz, cifar10/cifar10_jpg.tar.gz). "
    "An interrupted `train` resumes from its last epoch when run again.",
)


def one_of(values) -> str:
    return ", ".join(values)


def check_run_dir(path: Path) -> Path:
    # Checked when the command line is parsed: a run folder that cannot hold a checkpoint fails in one
    # line before the data is loaded, not after the first epoch.
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--run-dir {path} is a file, not a folder", hint="choose a folder for the run")
    check_writable(path / "checkpoint.pt", suffixes=(".pt",), flag="--run-dir")
    return path


ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help=f"Preset, one of: {one_of(PRESETS)}. See `tfdmnet models`."),
]
WidthOpt = Annotated[
    float,
    typer.Option("--width", help="Channel multiplier of the preset, > 0 (e.g. 0.25 for CPU CIFAR runs)."),
]
SpectrumOpt = Annotated[
    str | None,
    typer.Option(
        "--spectrum",
        help=f"Spectrum of the frequency-domain layers, one of: {one_of(SPECTRA)}. full (fft2) is the "
        "authors' network; half (rfft2) is a cheaper variant whose BN, LeakyReLU and dropout act on one bin "
        "of each conjugate pair (a different network). Default: the preset's (full).",
        show_default=False,
    ),
]
RunDirOpt = Annotated[
    Path, typer.Option("--run-dir", help="Folder for checkpoint.pt, log.jsonl and metrics.json.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="torch CPU threads (default: torch's choice).", min=1)
]


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def resolve_device(name: str):
    from effcore.device import infer_device

    return infer_device(name)


def check_spectrum(spectrum: str | None) -> str | None:
    if spectrum is not None and spectrum not in SPECTRA:
        raise ConfigError(f"--spectrum {spectrum!r} is not one of {one_of(SPECTRA)}")
    return spectrum


def with_spectrum(cfg: NetConfig, spectrum: str | None) -> NetConfig:
    """``cfg`` with its EMLs on ``spectrum``; an error for a network without frequency-domain layers."""
    if check_spectrum(spectrum) is None:
        return cfg
    if not cfg.has_eml:
        raise ConfigError(
            f"--spectrum does not apply to {cfg.name}: it has no frequency-domain layers",
            hint="drop --spectrum, or pick a mixture preset",
        )
    return dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, spectrum=spectrum))
