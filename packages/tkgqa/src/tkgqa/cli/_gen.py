"""``tkgqa gen-pretrain`` and ``tkgqa gen-questions``: GenTKGQA's temporal GNN and its training questions."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from effcore.assets import portable_path
from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    JsonOutOpt,
    OutOpt,
    SeedOpt,
    console,
    out_option,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tkgqa.cli._shared import KgOpt, ThreadsOpt, check_kg, command_line, set_threads
from tkgqa.store import TemporalKG

__all__ = ["gen_pretrain", "gen_questions"]

CheckpointOpt = Annotated[
    Path | None, out_option("Save the trained temporal GNN here (.pt; records the KG's fingerprint).",
                            suffixes=(".pt",), flag="--checkpoint", short=None),
]  # fmt: skip


def gen_meta(
    ctx: typer.Context, kg: TemporalKG, started: float, *, threads: int, device: str
) -> dict[str, Any]:
    """The command, machine, KG fingerprint and wall time a gen-* result file records."""
    import torch

    from effcore.device import cpu_model

    return {
        "command": command_line(ctx),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "threads": threads, "device": device,
                    "platform": platform.platform(), "torch": torch.__version__},
        "kg": {"source": portable_path(kg.source), "facts": len(kg), "entities": len(kg.entities),
               "relations": len(kg.relations), "digest": kg.digest},
    }  # fmt: skip


def gen_pretrain(
    ctx: typer.Context,
    kg: KgOpt = "multitq",
    epochs: Annotated[
        int, typer.Option("--epochs", help="Passes over the training facts (each encoder).")
    ] = 4,
    max_minutes: Annotated[
        float, typer.Option("--max-minutes", help="Stop each encoder's training after this many minutes.")
    ] = 10.0,
    dim: Annotated[int, typer.Option("--dim", help="Embedding width (even).")] = 64,
    layers: Annotated[int, typer.Option("--layers", help="Message-passing layers of the GNN (1-3).")] = 1,
    batch: Annotated[
        int, typer.Option("--batch", help="Queries per step (each scored against every entity).")
    ] = 4096,
    eval_facts: Annotated[
        int,
        typer.Option(
            "--eval-facts", help="Held-out facts ranked (seeded sample; x2 queries: tail and head)."
        ),
    ] = 2000,
    baseline: Annotated[
        bool, typer.Option("--baseline/--no-baseline", help="Also train and rank DistMult-with-time.")
    ] = True,
    checkpoint: CheckpointOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Pre-train GenTKGQA's temporal GNN by link prediction and rank held-out facts (filtered MRR, Hits@k).

    A seeded 5% of the facts is held out (never a message-passing edge); ranking is time-aware filtered,
    both directions. The DistMult-with-time baseline shares the time encoding and the recipe.
    """
    from tkgqa.gen.gnn import GnnConfig

    if not 1 <= layers <= 3:
        raise ConfigError(f"--layers must be 1..3, got {layers}")
    if max_minutes <= 0:
        raise ConfigError(f"--max-minutes must be > 0, got {max_minutes}")
    gnn_cfg = GnnConfig(encoder="tgnn", dim=dim, layers=layers, epochs=epochs, batch=batch,
                        eval_facts=eval_facts, seed=seed)  # fmt: skip
    cfgs = [gnn_cfg] + (
        [GnnConfig(**{**asdict(gnn_cfg), "encoder": "distmult", "layers": 0})] if baseline else []
    )
    set_threads(threads)
    check_kg(ctx, kg, None)
    started = time.perf_counter()
    from effcore.device import infer_device
    from tkgqa.gen.pretrain import evaluate_links, pretrain, save_encoder, split_facts
    from tkgqa.loaders import load_kg

    dev = infer_device(device)
    store = load_kg(kg, data_dir)
    rows, payload = [], {}
    for cfg in cfgs:
        with progress_bar(transient=True) as bar:
            name = cfg.encoder
            task = bar.add_task(f"training {name}", total=None)

            def report(step: int, total: int, loss: float, task=task, name=name) -> None:
                bar.update(task, completed=step, total=total, description=f"training {name} loss {loss:.3f}")

            enc = pretrain(store, cfg, device=dev, max_seconds=max_minutes * 60, progress=report)
        _, held = split_facts(len(store), cfg.holdout, cfg.seed)
        sample = held[:eval_facts]  # held-out rows come in seeded random order
        m = evaluate_links(enc, store, sample, device=dev)
        enc.metrics = asdict(m)
        if cfg.encoder == "tgnn" and checkpoint is not None:
            save_encoder(enc, checkpoint)
        payload[cfg.encoder] = {"config": asdict(cfg), "history": enc.history, "metrics": asdict(m),
                                "train_seconds": enc.history[-1]["seconds"], "train_facts": len(enc.train_rows),
                                "heldout_facts": len(held)}  # fmt: skip
        rows.append({"encoder": cfg.encoder, "epochs_done": len(enc.history), "steps": enc.history[-1]["steps"],
                     "train_s": enc.history[-1]["seconds"], **asdict(m)})  # fmt: skip
    console.print(render_table(f"tkgqa gen-pretrain {kg}: filtered link prediction on held-out facts", rows))
    if checkpoint is not None:
        console.print(f"encoder saved to {checkpoint}")
    payload["meta"] = gen_meta(ctx, store, started, threads=threads, device=str(dev))
    write_out(out, payload, rows=rows)


def gen_questions(
    ctx: typer.Context,
    kg: KgOpt = "multitq",
    n: Annotated[
        int, typer.Option("-n", help="Questions to generate (the six qtypes in turn) before the leak filter.")
    ] = 6000,
    against: Annotated[
        str,
        typer.Option("--against", help="Held-out MultiTQ questions they must not repeat: dev, test or all."),
    ] = "all",
    max_answers: Annotated[int, typer.Option("--max-answers", help="Skip questions with more answers.")] = 10,
    questions_out: Annotated[
        Path | None,
        out_option(
            "Write the kept questions (with their supporting rows and the KG's digest) as JSONL: "
            "the training file of `tkgqa gen-train --questions`.",
            suffixes=(".jsonl",),
            flag="--questions-out",
            short=None,
        ),
    ] = None,
    seed: SeedOpt = 0,
    data_dir: DataDirOpt = None,
    out: JsonOutOpt = None,
) -> None:
    """Generate training questions from the KG with MultiTQ's six templates, then drop any that leak.

    A question leaks when its normalised text, or its (entity, relation, time) key, matches a held-out
    MultiTQ question (see the README). `--out` records the leak report and how it was made.
    """
    from tkgqa.questions import SPLITS

    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    if max_answers < 1:
        raise ConfigError(f"--max-answers must be >= 1, got {max_answers}")
    if against not in SPLITS:
        raise ConfigError(f"--against {against!r} is not one of {', '.join(SPLITS)}")
    check_kg(ctx, kg, None)
    started = time.perf_counter()
    from tkgqa.gen.leaks import LeakFilter
    from tkgqa.gen.questions import generate_questions, write_questions
    from tkgqa.loaders import load_kg
    from tkgqa.questions import load_questions

    store = load_kg(kg, data_dir)
    made = generate_questions(store, n, seed=seed, max_answers=max_answers)
    kept, report = LeakFilter(store, load_questions(data_dir, split=against)).apply(made)
    by_type: dict[str, int] = {}
    for g in kept:
        by_type[g.question.qtype] = by_type.get(g.question.qtype, 0) + 1
    rows = [{"item": k, "value": v} for k, v in asdict(report).items() if k != "examples"]
    rows += [{"item": f"kept {k}", "value": v} for k, v in sorted(by_type.items())]
    console.print(render_table(f"tkgqa gen-questions {kg}: generated, leak-filtered against {against}", rows))
    payload = {"meta": {**gen_meta(ctx, store, started, threads=1, device="cpu"), "against": against},
               "leaks": asdict(report), "kept_by_qtype": by_type}  # fmt: skip
    if questions_out is not None:
        write_questions(questions_out, kept, store)
        console.print(f"wrote {len(kept)} questions to {questions_out}")
    write_out(out, payload)
