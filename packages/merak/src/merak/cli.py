"""The ``merak`` command line: partition a model into pipeline stages (more commands join as they land)."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli import OutOpt, console, make_app, render_table, write_out
from effcore.errors import ConfigError
from merak.models import MODEL_HELP
from merak.partition import METHODS

app = make_app(
    "merak",
    "Merak: automated 3D parallelism (data, tensor, pipeline) for unmodified HF models.\n\n"
    "  merak partition -m smollm2 --stages 4          # Merak's graph shards -> 4 balanced stages\n\n"
    "  merak schedule shifted-critical-path           # each stage's forward/recompute/backward order\n\n"
    "Models are captured with torch.export on the meta device unless --measure asks for timings, so a\n"
    "model too big for this machine partitions in one process.",
)

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
StagesOpt = Annotated[int, typer.Option("--stages", "-p", help="Pipeline stages (the pp of the mesh).")]
BatchOpt = Annotated[int, typer.Option("--batch", help="Micro-batch size (sequences).")]
SeqOpt = Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")]
MethodOpt = Annotated[
    str,
    typer.Option(
        "--method",
        help=f"Stage assignment: {', '.join(METHODS)} (equal shard counts, balanced parameters, or the "
        "optimal DP on predicted time).",
    ),
]
RecomputeOpt = Annotated[
    float | None,
    typer.Option(
        "--recompute",
        help="Merak's first-stage recompute ratio r0 in [0, 1]; later stages recompute less "
        "(1-(1-r0)(P-1)/(P-s)), the last none. Default: no recomputation.",
        show_default=False,
    ),
]
SpecOpt = Annotated[
    str,
    typer.Option(
        "--spec",
        help="Where costs come from: a datasheet (V100, A100, H100, H200: FLOPs at peak, no weights "
        "needed) or 'measure' (time every leaf here, on --device, with the real weights).",
    ),
]
ShardsOpt = Annotated[
    int | None,
    typer.Option(
        "--shards",
        help="Merak's shard count target (default: twice the number of blocks).",
        show_default=False,
    ),
]


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


@app.command()
def partition(
    model: ModelOpt = "smollm2",
    stages: StagesOpt = 4,
    batch: BatchOpt = 1,
    seq_len: SeqOpt = 512,
    method: MethodOpt = "time",
    recompute: RecomputeOpt = None,
    spec: SpecOpt = "H100",
    shards: ShardsOpt = None,
    device: Annotated[
        str, typer.Option("--device", "-d", help="Where --spec measure times the model.")
    ] = "cpu",
    out: OutOpt = None,
) -> None:
    """Capture MODEL, cut it into Merak's shards and assign them to pipeline stages; print the stages."""
    from effcore.device import infer_device, known_spec
    from merak.capture import capture
    from merak.models import load_model
    from merak.plan import plan_pipeline
    from merak.report import stage_rows

    _positive(stages=stages, batch=batch, seq_len=seq_len)
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}", hint=f"choose from {', '.join(METHODS)}")
    if recompute is not None and not 0.0 <= recompute <= 1.0:
        raise ConfigError(f"--recompute must be in [0, 1], got {recompute}")
    measured = spec == "measure"
    datasheet = None if measured else known_spec(spec)
    dev = infer_device(device)
    lm = load_model(model, weights=measured, device=dev)
    captured = capture(lm, (batch, seq_len))
    plan = plan_pipeline(
        captured, stages, method=method, shard_count=shards, recompute_ratio=recompute, spec=datasheet
    )
    rows = stage_rows(plan, captured.blocks)
    slowest = max(r["stage ms"] for r in rows)
    mean = sum(r["stage ms"] for r in rows) / len(rows)
    title = (
        f"{model}: {len(plan.shards)} shards on {stages} stages ({method}; costs: "
        f"{'measured on ' + str(dev) if measured else spec + ' datasheet'}); slowest/mean {slowest / mean:.2f}"
    )
    shown = ["stage", "holds", "params MiB", "recompute", "stage ms", "static MiB", "act MiB/mb"]
    console.print(render_table(title, rows, columns=shown))
    write_out(
        out, {"model": model, "method": method, "spec": spec, **plan.to_dict(), "rows": rows}, rows=rows
    )


@app.command()
def schedule(
    kind: Annotated[
        str, typer.Argument(help="gpipe, 1f1b, pre-recompute, last-no-recompute, shifted-critical-path.")
    ],
    stages: StagesOpt = 4,
    microbatches: Annotated[int, typer.Option("--microbatches", "-m", help="Micro-batches per step.")] = 8,
    out: OutOpt = None,
) -> None:
    """Print each stage's instruction list: F forward, R recompute ahead of backward, B backward
    (F* keeps only its input, F! keeps everything, F recomputes the stage's share)."""
    from merak.schedules import instructions, validate

    _positive(stages=stages, microbatches=microbatches)
    rows = [
        {"stage": s, "instructions": " ".join(str(i) for i in instructions(kind, s, stages, microbatches))}
        for s in range(stages)
    ]
    validate(kind, stages, microbatches)
    console.print(render_table(f"{kind}: {stages} stages, {microbatches} micro-batches", rows))
    write_out(out, {"kind": kind, "stages": stages, "microbatches": microbatches, "rows": rows}, rows=rows)
