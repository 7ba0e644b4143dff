"""The ``promptie`` command line: inspect prompts, train, evaluate, extract from your own text."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    make_app,
    out_option,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError

__all__ = ["app"]

app = make_app(
    "promptie",
    "Composable prompt-based information extraction: entities, relations and events as slot filling.\n\n"
    "  promptie prompts --schema casie --mode composable      # the prompts, validated\n\n"
    "  promptie train --data conll04 --out-dir runs/conll04   # fine-tune SmolLM2 (LoRA) + the MiniLM judge\n\n"
    "  promptie eval runs/conll04 --split test --out test.json\n\n"
    '  promptie extract "John works for Acme in Boston." -c runs/conll04\n\n'
    "Data: --data-dir, $EFFML_DATA or ../shared/data (ie/conll04, ie/phee, ie/casie).",
)

SchemaOpt = Annotated[
    str | None,
    typer.Option("--schema", "-s", help="A bundled schema (conll04, phee, casie) or a TOML file of your own types.",
                 show_default=False),
]  # fmt: skip
ModeOpt = Annotated[
    str | None,
    typer.Option("--mode", "-m", help="Prompts: 'specific' (each type's own) or 'composable' (shared fragments).",
                 show_default=False),
]  # fmt: skip
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="TOML with training fields, [data] and [extract] tables.", show_default=False
    ),
]
NullMarginOpt = Annotated[
    float | None,
    typer.Option("--null-margin", help="Subtract this from the null answer's logit at each slot's first step "
                 "(default: the margin `promptie tune-null` stored with the checkpoint, else 0).", show_default=False),
]  # fmt: skip
JsonlOpt = Annotated[Path | None, out_option("Write the JSON lines to this file too.", suffixes=(".jsonl",))]


def _reporter(bar):
    tasks: dict[str, int] = {}

    def report(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return report


def _check_out_dir(path: Path) -> None:
    """Checkpoints are written after training steps: refuse a folder that cannot be one before any work."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"--out-dir {path}: {probe} is a file, not a folder", hint="give a folder for the checkpoints"
        )
    if not os.access(probe, os.W_OK):
        raise ConfigError(f"--out-dir {path}: {probe} is not writable", hint="give a folder you can write to")


@app.command()
def prompts(
    schema: SchemaOpt = "conll04",
    mode: ModeOpt = "composable",
    out: OutOpt = None,
) -> None:
    """Show every type's prompt (slots in braces) and the relation statements; validates the schema."""
    from promptie.prompts import compose_all
    from promptie.schema import load_schema

    s = load_schema(schema or "conll04")
    rows = [
        {"type": p.type, "task": p.task, "slots": len(p.slots), "prompt": p.text}
        for p in compose_all(s, mode or "composable")
    ]
    rows += [{"type": r.name, "task": f"relation {r.head}->{r.tail}", "slots": 0, "prompt": r.statement}
             for r in s.relations.values()]  # fmt: skip
    console.print(render_table(f"{s.name}: {mode} prompts", rows))
    write_out(out, {"schema": s.name, "mode": mode, "rows": rows}, rows=rows)


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option("--data", help="Dataset: conll04, phee or casie.")] = "conll04",
    out_dir: Annotated[
        Path, typer.Option("--out-dir", help="Checkpoints go here; an existing run resumes.")
    ] = Path("promptie-run"),
    schema: SchemaOpt = None,
    config: ConfigOpt = None,
    mode: ModeOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="smollm2, gemma3-270m or an HF model folder (causal or seq2seq).", show_default=False
        ),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Optimizer steps.", min=1, show_default=False)] = None,
    fraction: Annotated[
        float | None,
        typer.Option(help="Fraction of the training set (data-scarce: 0.01, 0.05).", show_default=False),
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="At most this many training documents.", min=1, show_default=False)
    ] = None,
    held_out: Annotated[
        str | None, typer.Option(help="Comma-separated event types kept out of training.", show_default=False)
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out-dir.")] = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Fine-tune the LM on slot filling (LoRA by default) and, with relations, the judge and its threshold."""
    from promptie.data import DATASETS
    from promptie.runs import DataSpec, load_config, run_train
    from promptie.schema import load_schema
    from promptie.train import TrainConfig

    if data not in DATASETS:
        raise ConfigError(f"unknown dataset {data!r}", hint=f"use one of {', '.join(DATASETS)}")
    cfg_d, data_d, extract_d = load_config(config)
    cfg_d.update({k: v for k, v in {"mode": mode, "model": model, "steps": steps}.items() if v is not None})
    cfg_d.setdefault("seed", seed)
    spec_d = {"dataset": data, **data_d}
    spec_d.update({k: v for k, v in {"fraction": fraction, "limit": limit}.items() if v is not None})
    if held_out:
        spec_d["held_out"] = [t.strip() for t in held_out.split(",") if t.strip()]
    s = load_schema(schema or data)
    if s.relations and "judge" not in cfg_d:
        cfg_d["judge"] = "minilm"
    cfg = TrainConfig.from_dict(cfg_d, source="train options")
    spec = DataSpec(**spec_d)
    if spec.held_out and cfg.mode != "composable":
        raise ConfigError(
            f"--held-out needs composable prompts (mode is {cfg.mode!r})",
            hint="a held-out type is extracted zero-shot from fragments other types taught: add --mode composable",
        )
    _check_out_dir(out_dir)
    with progress_bar() as bar:
        summary = run_train(s, cfg, spec, out_dir, extract=extract_d, root=data_dir, device=device, resume=resume,
                            progress=_reporter(bar), command=["promptie", *sys.argv[1:]])  # fmt: skip
    losses = summary["record"]["losses"]
    rows = [{"item": k, "value": v} for k, v in (
        ("documents", summary["documents"]), ("examples", summary["examples"]),
        ("skipped (too long)", summary["skipped_too_long"]), ("steps", len(losses)),
        ("loss first -> last10", f"{losses[0]:.3f} -> {summary['final_loss_mean_last10']:.3f}"),
        ("threshold", summary["threshold"].get("threshold")), ("wall s", summary["wall_seconds"]))]  # fmt: skip
    console.print(render_table(f"promptie train: {s.name} ({cfg.mode}) -> {out_dir}", rows))
    write_out(out, summary, rows=rows)


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A `promptie train --out-dir` folder.")],
    data: Annotated[
        str | None,
        typer.Option("--data", help="Dataset (default: the one it was trained on).", show_default=False),
    ] = None,
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    limit: Annotated[
        int | None, typer.Option(help="A seeded subset of this many documents.", min=1, show_default=False)
    ] = None,
    schema: SchemaOpt = None,
    mode: ModeOpt = None,
    relations: Annotated[
        str | None,
        typer.Option(
            help="Relation decisions on gold entities: 'judge', 'direct', 'judge,direct' "
            "(default: judge when the schema has relations).",
            show_default=False,
        ),
    ] = None,
    null_margin: NullMarginOpt = None,
    config: ConfigOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Score a checkpoint: entity / relation (strict, boundaries) / trigger / argument P, R, F1."""
    from promptie.checkpoint import read_checkpoint
    from promptie.runs import DataSpec, load_config, run_eval
    from promptie.schema import load_schema

    _, data_d, extract_d = load_config(config)
    ck = read_checkpoint(checkpoint)
    dataset = data or (ck.meta.get("data") or {}).get("dataset") or "conll04"
    spec = DataSpec(**{"dataset": dataset, **data_d, "seed": seed})
    eval_schema = load_schema(schema) if schema else ck.schema
    if relations is None:
        methods: tuple[str, ...] = ("judge",) if eval_schema.relations else ()
    else:
        methods = tuple(m.strip() for m in relations.split(",") if m.strip())
        if not methods or any(m not in ("judge", "direct") for m in methods):
            raise ConfigError(f"--relations {relations!r}: use judge, direct or judge,direct")
    overrides = _overrides(extract_d, mode, null_margin)
    with progress_bar() as bar:
        report = run_eval(checkpoint, spec, split, schema=eval_schema if schema else None, limit=limit,
                          relation_methods=methods, root=data_dir, device=device, overrides=overrides,
                          progress=_reporter(bar), command=["promptie", *sys.argv[1:]])  # fmt: skip
    rows = [{"metric": k, "precision": v["precision"], "recall": v["recall"], "f1": v["f1"], "gold": v["gold"]}
            for k, v in report["metrics"].items()]  # fmt: skip
    for m, r in report.get("relations_on_gold_entities", {}).items():
        rows.append({"metric": f"relation_strict gold entities ({m})", "precision": r["strict_precision"],
                     "recall": r["strict_recall"], "f1": r["strict_f1"], "gold": r["strict_gold"]})  # fmt: skip
        rows.append({"metric": f"false-positive rate, unrelated pairs ({m})", "precision": None, "recall": None,
                     "f1": r["false_positive_rate"], "gold": r["unrelated"]})  # fmt: skip
    console.print(
        render_table(
            f"promptie eval: {report['schema']} {split} ({report['eval_documents']} documents)", rows
        )
    )
    write_out(out, report, rows=rows)


@app.command("tune-null")
def tune_null_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A `promptie train --out-dir` folder.")],
    grid: Annotated[str, typer.Option(help="Comma-separated null margins to try.")] = "0,1,2,3,4,6,8",
    split: Annotated[str, typer.Option(help="dev (or train); never test.")] = "dev",
    limit: Annotated[
        int | None, typer.Option(help="A seeded subset of this many documents.", min=1, show_default=False)
    ] = None,
    config: ConfigOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Choose the null-answer margin on dev by F1 over a grid; store it with the checkpoint (eval and
    extract then use it)."""
    from promptie.checkpoint import read_checkpoint
    from promptie.runs import DataSpec, check_tune_split, load_config, parse_grid, run_tune

    check_tune_split(split)
    margins = parse_grid(grid)
    _, data_d, extract_d = load_config(config)
    ck = read_checkpoint(checkpoint)
    spec = DataSpec(
        **{"dataset": (ck.meta.get("data") or {}).get("dataset") or "conll04", **data_d, "seed": seed}
    )
    with progress_bar() as bar:
        report = run_tune(checkpoint, spec, split, margins, limit=limit, root=data_dir, device=device,
                          overrides=_overrides(extract_d, None, None), progress=_reporter(bar),
                          command=["promptie", *sys.argv[1:]])  # fmt: skip
    rows = [{"null_margin": r["null_margin"], "mean F1": r["score"],
             **{m: r["metrics"][m]["f1"] for m in report["score_metrics"]}} for r in report["grid"]]  # fmt: skip
    console.print(render_table(f"promptie tune-null: {report['schema']} {split} ({report['documents']} documents), "
                               f"chosen {report['null_margin']}", rows))  # fmt: skip
    write_out(out, report, rows=rows)


@app.command()
def extract(
    text: Annotated[str | None, typer.Argument(help="The text; or --file.", show_default=False)] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="One text per line (.txt) or a whole file with --whole.", show_default=False
        ),
    ] = None,
    whole: Annotated[
        bool, typer.Option(help="Read --file as one text (long texts are windowed, never truncated).")
    ] = False,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", help="A trained run folder.", show_default=False)
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="No checkpoint: an untrained model (smollm2, gemma3-270m, folder).", show_default=False
        ),
    ] = None,
    schema: SchemaOpt = None,
    mode: ModeOpt = None,
    null_margin: NullMarginOpt = None,
    config: ConfigOpt = None,
    device: DeviceOpt = "auto",
    out: JsonlOpt = None,
) -> None:
    """Extract from text: one JSON line per text with entities, relations and events (character offsets)."""
    from effcore.io import atomic_write_text
    from promptie.output import document_json
    from promptie.runs import load_config

    _, _, extract_d = load_config(config)
    if (text is None) == (file is None):
        raise ConfigError("give either a TEXT argument or --file", hint='promptie extract "some text" -c RUN')
    if whole and file is None:
        raise ConfigError("--whole applies to --file only", hint="a TEXT argument is always one text")
    if checkpoint is not None and model is not None:
        raise ConfigError(
            "give --checkpoint or --model, not both",
            hint="a checkpoint already names the model it was trained on",
        )
    if file is not None:
        if not file.is_file():
            raise ConfigError(f"--file {file} does not exist")
        raw = file.read_text(encoding="utf-8", errors="replace")
        texts = [raw] if whole else [line for line in raw.splitlines() if line.strip()]
        if not texts:
            raise ConfigError(f"--file {file} is empty", hint="give a file with text in it")
    else:
        texts = [text or ""]
    ex = _extractor(checkpoint, model, schema, _overrides(extract_d, mode, null_margin), device)
    for t in texts:
        ex.check_text(t)  # every text is checked before any output is written
    lines = []
    with progress_bar(transient=True) as bar:
        task = bar.add_task("extract", total=len(texts))
        for i, t in enumerate(texts):
            d = ex.extract(t)
            d.id = str(i)
            lines.append(json.dumps(document_json(d), ensure_ascii=False))
            bar.update(task, completed=i + 1)
    for line in lines:
        typer.echo(line)
    if out is not None:
        atomic_write_text(out, "\n".join(lines) + "\n")
        err_console.print(f"wrote {out}")


def _overrides(extract_d: dict, mode: str | None, null_margin: float | None) -> dict:
    """``[extract]`` settings with the command line's on top, validated before any model is loaded."""
    from promptie.extractor import ExtractConfig

    out = {**extract_d, **({"mode": mode} if mode else {})}
    if null_margin is not None:
        out["null_margin"] = null_margin
    ExtractConfig(**out)
    return out


def _extractor(checkpoint, model, schema, overrides, device):
    from promptie.backbone import load_backbone
    from promptie.extractor import ExtractConfig, Extractor
    from promptie.relations import LMJudge
    from promptie.schema import load_schema
    from promptie.train import load_extractor

    if checkpoint is not None:
        return load_extractor(
            checkpoint, schema=load_schema(schema) if schema else None, device=device, overrides=overrides
        )
    if model is None:
        raise ConfigError("give --checkpoint (a trained run) or --model (an untrained LM)")
    bb = load_backbone(model, device=device)
    s = load_schema(schema or "conll04")
    return Extractor(bb, s, ExtractConfig(**overrides), judge=LMJudge(bb) if s.relations else None)
