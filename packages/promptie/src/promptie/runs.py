"""End-to-end runs behind the CLI: data selection, training (LM, judge, threshold), evaluation; each run
returns a record with its command, model, data sizes, seeds and wall time."""

from __future__ import annotations

import platform
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError
from promptie.checkpoint import checkpoint_meta, read_checkpoint, write_checkpoint, write_null_margin
from promptie.data import Document, Event, load_dataset, subsample
from promptie.extractor import ExtractConfig
from promptie.schema import Schema
from promptie.train import TrainConfig, choose_threshold, load_extractor, train, train_judge

__all__ = [
    "DataSpec",
    "git_commit",
    "load_config",
    "parse_grid",
    "portable",
    "run_eval",
    "run_train",
    "run_tune",
    "select",
]


@dataclass(kw_only=True, slots=True)
class DataSpec:
    dataset: str = "conll04"
    fraction: float = 1.0  # of the training documents (data-scarce splits: 0.01, 0.05, 0.1)
    limit: int | None = None  # then at most this many
    events_only: bool = False  # keep only documents with an event (CASIE's sentences)
    held_out: list[str] = field(default_factory=list)  # event types removed from training (zero-shot)
    dev_limit: int | None = 200  # dev documents for the relation threshold
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ConfigError(f"data.fraction must be in (0, 1], got {self.fraction}")
        for name in ("limit", "dev_limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {value}", hint="leave it out for no limit")


def select(spec: DataSpec, split: str, *, root: Path | None = None, limit: int | None = None,
           fraction: float = 1.0, seed: int | None = None) -> list[Document]:  # fmt: skip
    docs = load_dataset(spec.dataset, split, root=root)
    return subsample(docs, fraction=fraction, limit=limit, seed=spec.seed if seed is None else seed,
                     with_events_only=spec.events_only)  # fmt: skip


def _without(docs: list[Document], held_out: set[str]) -> list[Document]:
    return [Document(d.id, d.text, d.entities, d.relations, [e for e in d.events if e.type not in held_out])
            for d in docs]  # fmt: skip


def load_config(path: Path | None) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``--config`` TOML: top-level training fields, ``[data]`` and ``[extract]`` tables."""
    if path is None:
        return {}, {}, {}
    if not path.is_file():
        raise ConfigError(f"--config {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"--config {path}: not valid TOML ({err})") from None
    data_t, extract_t = data.pop("data", {}), data.pop("extract", {})
    for name, table, cls in (("data", data_t, DataSpec), ("extract", extract_t, ExtractConfig)):
        known = {f.name for f in fields(cls)}
        bad = sorted(set(table) - known)
        if bad:
            raise ConfigError(
                f"--config {path}: unknown field {name}.{bad[0]}", hint=f"known: {', '.join(sorted(known))}"
            )
    TrainConfig.from_dict(data, source=f"--config {path}")  # validate early
    return data, data_t, extract_t


def git_commit() -> str | None:
    """The short commit of the checkout this package runs from (``+dirty`` when tracked files changed;
    None outside a git checkout): :func:`effcore.provenance.git_commit` at this file's folder."""
    from effcore.provenance import git_commit as commit_at

    return commit_at(Path(__file__).parent)


def portable(path: str) -> str:
    """``path`` with the value of ``$RUNS`` (results/run_all.sh's checkpoint folder, when exported) written
    as ``$RUNS``, so that a committed result file names no machine-local folder."""
    import os

    runs = os.environ.get("RUNS", "").rstrip("/")
    return path.replace(runs + "/", "$RUNS/") if runs else path


def _meta(command: list[str] | None, t0: float, commit: str | None) -> dict[str, Any]:
    """The run's provenance; ``commit`` is read when the run starts (the code it imported)."""
    return {"git_commit": commit, "command": portable(" ".join(command or sys.argv)), "wall_seconds": round(time.perf_counter() - t0, 1),
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(), "python": platform.python_version()}  # fmt: skip


def run_train(schema: Schema, cfg: TrainConfig, spec: DataSpec, out_dir: Path, *, extract: dict[str, Any] | None = None,
              root: Path | None = None, device: str = "auto", resume: bool = True, progress=None,
              command: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Train on the selected training documents; judge + dev threshold when the schema has relations."""
    t0, commit = time.perf_counter(), git_commit()
    ExtractConfig(**(extract or {}))
    unknown = [t for t in spec.held_out if t not in schema.events]
    if unknown:
        raise ConfigError(
            f"--held-out: {unknown[0]!r} is not an event type of {schema.name}",
            hint=f"known: {', '.join(schema.events)}",
        )
    train_schema = (
        schema.subset(events=[t for t in schema.events if t not in spec.held_out])
        if spec.held_out
        else schema
    )
    docs = select(spec, "train", root=root, fraction=spec.fraction, limit=spec.limit)
    if spec.held_out:
        docs = _without(docs, set(spec.held_out))
    data = {"dataset": spec.dataset, "train_documents": len(docs), "fraction": spec.fraction, "limit": spec.limit,
            "held_out": spec.held_out, "data_seed": spec.seed, "events_only": spec.events_only}  # fmt: skip
    result = train(
        docs, train_schema, cfg, out_dir, device=device, resume=resume, progress=progress, meta={"data": data}
    )
    bb, record = result.pop("backbone"), result["record"]
    judge, judge_info, thr = None, None, {}
    if train_schema.relations and cfg.judge:
        if cfg.judge == "minilm":
            judge, judge_info = train_judge(docs, train_schema, cfg, device=str(bb.device), progress=progress)
            judge_info.pop("losses_all", None)
        else:
            from promptie.relations import LMJudge

            judge = LMJudge(bb)
        dev = select(spec, "dev", root=root, limit=spec.dev_limit)
        thr = choose_threshold(judge, dev, train_schema)
        data["dev_documents_threshold"] = len(dev)
    extract_cfg = {**(extract or {}), **({"threshold": thr["threshold"]} if thr else {})}
    summary = {**result, "judge": judge_info, "threshold": thr, **_meta(command, t0, commit),
               "final_loss_mean_last10": sum(record["losses"][-10:]) / max(len(record["losses"][-10:]), 1)}  # fmt: skip
    write_checkpoint(out_dir, step=cfg.steps, model=bb.model, judge=judge,
                     meta=checkpoint_meta(train_schema, **{k: v for k, v in result.items()}, extract=extract_cfg,
                                          judge_info=judge_info, threshold_info=thr))  # fmt: skip
    return summary


def _per_type(report_docs: list[Document], gold: list[Document], types: list[str]) -> dict[str, Any]:
    from promptie.metrics import score_documents

    def only(ds: list[Document], t: str) -> list[Document]:
        return [Document(d.id, d.text, events=[e for e in d.events if e.type == t]) for d in ds]

    out = {}
    for t in types:
        s = score_documents(only(report_docs, t), only(gold, t),
                            metrics=("trigger_id", "trigger_cls", "argument_id", "argument_cls"))  # fmt: skip
        out[t] = {k: v.to_dict() for k, v in s.items()}
    return out


def run_eval(checkpoint: Path, spec: DataSpec, split: str, *, schema: Schema | None = None, limit: int | None = None,
             relation_methods: tuple[str, ...] = (), root: Path | None = None, device: str = "auto",
             overrides: dict[str, Any] | None = None, progress=None, command: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Evaluate a checkpoint on ``split`` (a seeded subset when ``limit``)."""
    from promptie.evaluate import evaluate

    t0, commit = time.perf_counter(), git_commit()
    ck = read_checkpoint(checkpoint)
    if relation_methods and not (schema or ck.schema).relations:
        raise ConfigError(
            f"--relations {','.join(relation_methods)}: schema {(schema or ck.schema).name!r} has no relations",
            hint="omit --relations for a schema without relation types",
        )
    docs = select(spec, split, root=root, limit=limit)  # before the model: a bad split or data fails fast
    ex = load_extractor(checkpoint, schema=schema, device=device, overrides=overrides)
    report = evaluate(ex, docs, relation_methods=relation_methods, progress=progress)
    if ex.schema.events:
        preds = [Document(p["id"], p["text"], events=[Event(e["type"], tuple(_span(s) for s in e["triggers"]),
                 tuple((a["role"], _span(a)) for a in e["arguments"])) for e in p["events"]]) for p in report["predictions"]]  # fmt: skip
        report["per_event_type"] = _per_type(preds, docs, list(ex.schema.events))
    report.update({"checkpoint": portable(str(ck.folder)), "model": ck.meta["model"], "mode": ex.config.mode,
                   "schema": ex.schema.name, "trained_event_types": sorted(ck.meta["signature"]["events"]),
                   "split": split, "eval_documents": len(docs), "limit": limit, "data_seed": spec.seed,
                   "train_data": ck.meta.get("data"), "train_config": ck.meta.get("config"),
                   "extract_config": asdict(ex.config), "null_margin_tuned": _tuned_summary(ck.null_margin),
                   **_meta(command, t0, commit)})  # fmt: skip
    return report


def _tuned_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    return {k: v for k, v in record.items() if k != "grid"} if record else None


def parse_grid(text: str) -> list[float]:
    """``--grid 0,1,2,4``: distinct finite margins, at least two."""
    import math

    try:
        grid = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--grid {text!r}: not a comma-separated list of numbers", hint="e.g. --grid 0,1,2,4,8"
        ) from None
    if len(grid) < 2 or len(set(grid)) != len(grid) or not all(map(math.isfinite, grid)):
        raise ConfigError(
            f"--grid {text!r}: give at least two distinct finite margins", hint="e.g. --grid 0,1,2,4,8"
        )
    return grid


def check_tune_split(split: str) -> None:
    if split == "test":
        raise ConfigError("tune-null on the test split would choose the margin on the numbers it reports",
                          hint="use --split dev (the default)")  # fmt: skip


def run_tune(checkpoint: Path, spec: DataSpec, split: str, grid: list[float], *, limit: int | None = None,
             root: Path | None = None, device: str = "auto", overrides: dict[str, Any] | None = None,
             progress=None, command: list[str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Choose the null margin on ``split`` (dev) by F1 over ``grid``; store it beside the checkpoint."""
    from promptie.evaluate import tune_null_margin
    from promptie.train import load_extractor

    t0, commit = time.perf_counter(), git_commit()
    check_tune_split(split)
    ck = read_checkpoint(checkpoint)
    docs = select(spec, split, root=root, limit=limit)
    ex = load_extractor(checkpoint, device=device, overrides={**(overrides or {}), "null_margin": 0.0})
    tuned = tune_null_margin(ex, docs, grid, progress=progress)
    meta = _meta(command, t0, commit)
    record = {"null_margin": tuned["null_margin"], "score": tuned["score"], "score_metrics": tuned["score_metrics"],
              "split": split, "documents": len(docs), "limit": limit, "data_seed": spec.seed,
              "grid": [{"null_margin": r["null_margin"], "score": r["score"]} for r in tuned["grid"]],
              "tuned_by": meta["command"], "git_commit": commit}  # fmt: skip
    write_null_margin(ck, record)
    return {**tuned, "checkpoint": portable(str(ck.folder)), "model": ck.meta["model"], "mode": ex.config.mode,
            "schema": ex.schema.name, "split": split, "documents": len(docs), "limit": limit, "data_seed": spec.seed,
            "extract_config": asdict(ex.config), **meta}  # fmt: skip


def _span(d: dict[str, Any]):
    from promptie.data import Span

    return Span(d["start"], d["end"])
