"""Checkpoints: trainable weights, optimizer, judge and the schema, written so a crash never leaves half of one.

Layout: ``<dir>/step-<n>/`` (meta.json, weights.safetensors, optimizer.pt, judge/) and ``<dir>/latest``,
a one-line pointer replaced atomically after the step folder is complete; older step folders are then
removed. A reader follows ``latest`` only, so an interrupted write is invisible.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from effcore.errors import ConfigError
from effcore.io import atomic_write_text, write_json
from promptie.schema import Schema, dump_schema, parse_schema

__all__ = ["FORMAT", "Checkpoint", "check_schema", "latest", "read_checkpoint", "write_checkpoint",
           "write_null_margin"]  # fmt: skip

FORMAT = 1
NULL_MARGIN = "null_margin.json"  # in the step folder: the margin tune-null chose, read by load_extractor


@dataclass(slots=True)
class Checkpoint:
    folder: Path
    meta: dict[str, Any]

    @property
    def schema(self) -> Schema:
        import tomllib

        return parse_schema(tomllib.loads(self.meta["schema_toml"]), source=f"{self.folder}/meta.json")

    @property
    def step(self) -> int:
        return int(self.meta["step"])

    @property
    def null_margin(self) -> dict[str, Any] | None:
        """The margin `promptie tune-null` chose for this checkpoint (``null_margin.json``), if any."""
        path = self.folder / NULL_MARGIN
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
            float(record["null_margin"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path} is not a tune-null record ({err!r})",
                              hint="rerun `promptie tune-null` on this checkpoint, or delete the file") from None  # fmt: skip
        return record


def write_null_margin(ckpt: Checkpoint, record: dict[str, Any]) -> Path:
    """Store a tuned null margin beside the checkpoint's weights (atomically; it replaces an older one)."""
    return write_json(ckpt.folder / NULL_MARGIN, record)


def latest(root: Path) -> Path | None:
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    folder = root / pointer.read_text().strip()
    return folder if (folder / "meta.json").is_file() else None


def write_checkpoint(root: Path, *, step: int, meta: dict[str, Any], model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer | None = None, judge=None) -> Path:  # fmt: skip
    """Write ``step-<step>`` (trainable parameters only), then point ``latest`` at it."""
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = root / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    weights = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
    save_file(weights, tmp / "weights.safetensors")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if judge is not None and hasattr(judge, "save"):
        judge.save(tmp / "judge")
    write_json(tmp / "meta.json", {**meta, "format": FORMAT, "step": step})
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(root / "latest", name + "\n")
    for old in root.glob("step-*"):
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint folder (``step-*``) or a training directory holding ``latest``."""
    path = Path(path)
    folder = path if (path / "meta.json").is_file() else latest(path)
    if folder is None:
        raise ConfigError(f"no checkpoint at {path}", hint="give the --out-dir of `promptie train`")
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{folder}/meta.json is not valid JSON ({err})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{folder} has checkpoint format {meta.get('format')!r}, expected {FORMAT}")
    return Checkpoint(folder, meta)


def checkpoint_meta(schema: Schema, **fields: Any) -> dict[str, Any]:
    return {
        "schema_name": schema.name,
        "schema_toml": dump_schema(schema),
        "signature": schema.signature(),
        **fields,
    }


def check_schema(ckpt: Checkpoint, schema: Schema, *, allow_new_events: bool = False) -> None:
    """Refuse a checkpoint trained for a schema with other types, roles or relation signatures.

    With ``allow_new_events`` (composable prompts) the schema may add event types the checkpoint never
    saw: their prompts are composed from fragments it did learn (zero-shot types).
    """
    have, want = ckpt.meta["signature"], schema.signature()
    problem = None
    for key in ("entities", "relations"):
        if have[key] != want[key]:
            problem = f"its {key} {have[key]} differ from {want[key]}"
            break
    else:
        for name, roles in have["events"].items():
            if want["events"].get(name) != roles:
                problem = f"its event type {name!r} with roles {roles} is not in the schema as such"
                break
        else:
            new = sorted(set(want["events"]) - set(have["events"]))
            if new and not allow_new_events:
                problem = (
                    f"the schema adds event types {new} (only composable prompts can extract unseen types)"
                )
    if problem:
        raise ConfigError(
            f"checkpoint {ckpt.folder} was trained for schema {ckpt.meta['schema_name']!r} and does not fit "
            f"schema {schema.name!r}: {problem}",
            hint="use the schema it was trained with (omit --schema) or train a new checkpoint",
        )
