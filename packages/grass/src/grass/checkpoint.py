"""Resumable checkpoints: weights, optimizer (offloaded state included), sampler and data position,
RNG; written atomically, and refused when they belong to another run or model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from effcore.errors import ConfigError
from effcore.io import atomic_path

__all__ = ["CHECKPOINT", "load_checkpoint", "read_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint.pt"
_FORMAT = 1


def save_checkpoint(
    run_dir: Path, payload: dict[str, Any], *, fingerprint: str, model: str, step: int
) -> Path:
    """Write ``run_dir/checkpoint.pt`` atomically: a crash mid-write keeps the previous checkpoint."""
    path = Path(run_dir) / CHECKPOINT
    record = {"format": _FORMAT, "fingerprint": fingerprint, "model": model, "step": step, **payload}
    record["rng"] = torch.get_rng_state()
    with atomic_path(path) as tmp:
        torch.save(record, tmp)
    return path


def read_checkpoint(path: Path, *, model: str | None = None) -> dict[str, Any]:
    """The grass checkpoint at ``path``, refused (one :class:`ConfigError`) when it is missing, not a
    grass checkpoint, or written for another model than ``model`` (None: any)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist", hint="point --run-dir at a folder written by grass train")
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch.load raises many types for a corrupt file
        raise ConfigError(
            f"{path} is not a readable grass checkpoint ({type(err).__name__})",
            hint="delete it or point --run-dir elsewhere",
        ) from None
    if not isinstance(record, dict) or record.get("format") != _FORMAT:
        raise ConfigError(f"{path} is not a grass checkpoint", hint="point --run-dir at a grass run")
    if model is not None and record["model"] != model:
        raise ConfigError(
            f"{path} was written for model {record['model']!r}, not {model!r}",
            hint="resume with the same --model, or use a fresh --run-dir",
        )
    return record


def load_checkpoint(run_dir: Path, *, fingerprint: str, model: str) -> dict[str, Any] | None:
    """The checkpoint in ``run_dir`` to resume from (None when there is none; the torch RNG is
    restored); a checkpoint of another run or model is a :class:`ConfigError`, so nothing is
    overwritten by mistake."""
    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        return None
    record = read_checkpoint(path, model=model)
    if record["fingerprint"] != fingerprint:
        saved = record.get("config", {})
        raise ConfigError(
            f"{path} belongs to another run (method {saved.get('method')!r}, seed {saved.get('seed')}, "
            f"other settings may differ)",
            hint="resume with the run's own settings, or use a fresh --run-dir",
        )
    torch.set_rng_state(record["rng"])
    return record
