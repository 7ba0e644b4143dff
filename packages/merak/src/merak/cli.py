"""The ``merak`` command line: partition a model into pipeline stages (more commands join as they land)."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    PlotOpt,
    SeedOpt,
    console,
    make_app,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from merak.models import MODEL_HELP
from merak.partition import METHODS

app = make_app(
    "merak",
    "Merak: automated 3D parallelism (data, tensor, pipeline) for unmodified HF models.\n\n"
    "  merak partition -m smollm2 --stages 4          # Merak's graph shards -> 4 balanced stages\n\n"
    "  merak schedule shifted-critical-path           # each stage's forward/recompute/backward order\n\n"
    "  merak simulate -m smollm2 --stages 4 --plot t.png  # every schedule's step, bubble, memory\n\n"
    "  merak train -m smollm2 --mesh 1,2,2 --steps 5  # train on 4 ranks (torchrun), real text\n\n"
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


@app.command()
def train(
    model: ModelOpt = "smollm2",
    mesh: Annotated[str, typer.Option("--mesh", help="dp,tp,pp: one process per rank (torchrun).")] = "1,1,2",
    schedule: Annotated[
        str,
        typer.Option(
            "--schedule", help="A merak schedule (see `merak schedule`) or torch-gpipe / torch-1f1b."
        ),
    ] = "1f1b",
    method: MethodOpt = "time",
    recompute: RecomputeOpt = None,
    tp_overlap: Annotated[
        bool,
        typer.Option(help="Sub-pipelined TP: two half micro-batches in lockstep (needs an even --batch)."),
    ] = False,
    batch: BatchOpt = 1,
    seq_len: SeqOpt = 128,
    microbatches: Annotated[
        int, typer.Option("--microbatches", help="Micro-batches per step and data-parallel rank.")
    ] = 4,
    steps: Annotated[int, typer.Option("--steps", help="Optimizer steps.")] = 5,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-4,
    data: Annotated[
        str, typer.Option("--data", help="wikitext2 (its valid split) or tinyshakespeare.")
    ] = "wikitext2",
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Wall-clock limit of the whole job (s).")
    ] = 3600.0,
    rank_timeout: Annotated[
        float, typer.Option("--rank-timeout", help="How long a rank waits for a peer before giving up (s).")
    ] = 300.0,
    fail_at: Annotated[str | None, typer.Option("--fail-at", hidden=True)] = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Train MODEL in 3D parallel under torchrun (gloo on CPU, NCCL on GPUs); print loss and time per step."""
    from effcore.cli import int_list, progress_bar
    from effcore.distributed import run_job
    from merak.parallel import TORCH_SCHEDULES
    from merak.schedules import SCHEDULES
    from merak.train import TrainJob

    sizes = int_list(mesh, "--mesh")
    if len(sizes) != 3:
        raise ConfigError(f"--mesh takes three sizes dp,tp,pp, got {mesh!r}")
    if schedule not in SCHEDULES and schedule not in TORCH_SCHEDULES:
        raise ConfigError(
            f"unknown --schedule {schedule!r}",
            hint=f"choose from {', '.join([*SCHEDULES, *TORCH_SCHEDULES])}",
        )
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}", hint=f"choose from {', '.join(METHODS)}")
    if tp_overlap and batch % 2:
        raise ConfigError(f"--tp-overlap splits each micro-batch in two: --batch {batch} must be even")
    job = TrainJob(model=model, mesh=tuple(sizes), schedule=schedule, partition=method, recompute=recompute,
                   tp_overlap=tp_overlap, batch=batch, seq_len=seq_len, microbatches=microbatches, steps=steps,
                   lr=lr, seed=seed, data=data, data_dir=str(data_dir) if data_dir else None, fail_at=fail_at,
                   device=_device_name(device))  # fmt: skip
    _check_model(job.model, tp=job.mesh[1], seq_len=job.seq_len)
    rows: list[dict] = []
    summary: dict = {}
    with progress_bar() as bar:
        task = bar.add_task(f"training on {job.world} ranks", total=steps)

        def on_event(event: dict) -> None:
            if event.get("event") == "step":
                rows.append({k: event[k] for k in ("step", "loss", "seconds")})
                bar.advance(task)
            elif event.get("event") == "done":
                summary.update(event)

        run_job("merak.worker", "train", job.to_dict(), nproc=job.world, timeout_s=timeout,
                rank_timeout_s=rank_timeout, on_event=on_event)  # fmt: skip
    console.print(render_table(f"{model} on mesh dp,tp,pp = {mesh} ({schedule})", rows))
    write_out(out, {"job": job.to_dict(), "steps": rows, **summary}, rows=rows)


def _device_name(device: str) -> str:
    """``auto``, ``cpu`` or ``cuda`` for every rank (each takes its own GPU); checked here."""
    from effcore.device import infer_device

    kind = infer_device(device).type
    return "auto" if device == "auto" else kind


def _check_model(model: str, *, tp: int, seq_len: int) -> None:
    """What can be checked before starting ranks: the model exists, tp divides its heads, the
    sequence fits its positions."""
    from merak.models import load_model

    config = load_model(model, weights=False).config
    for field in ("num_attention_heads", "num_key_value_heads", "n_head"):
        value = getattr(config, field, None)
        if isinstance(value, int) and value % tp:
            raise ConfigError(
                f"tp={tp} does not divide the model's {field}={value}", hint="choose a tp that divides it"
            )
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    if isinstance(limit, int) and seq_len > limit:
        raise ConfigError(f"--seq-len {seq_len} exceeds the model's {limit} positions")


@app.command()
def simulate(
    model: ModelOpt = "smollm2",
    stages: StagesOpt = 4,
    microbatches: Annotated[int, typer.Option("--microbatches", help="Micro-batches per step.")] = 8,
    batch: BatchOpt = 1,
    seq_len: SeqOpt = 512,
    method: MethodOpt = "time",
    recompute: RecomputeOpt = None,
    spec: Annotated[
        str, typer.Option("--spec", help="Accelerator datasheet: V100, A100, H100, H200.")
    ] = "H100",
    bandwidth: Annotated[
        str,
        typer.Option("--bandwidth", help="Stage-to-stage link, bytes/s per direction (e.g. 50GB, 25GiB)."),
    ] = "50GB",
    schedule: Annotated[
        str, typer.Option("--schedule", help="The schedule to draw with --plot.")
    ] = "shifted-critical-path",
    plot: PlotOpt = None,
    out: OutOpt = None,
) -> None:
    """Simulate one training step of every schedule on MODEL's predicted stage costs: step time,
    bubble and peak memory per stage; --plot draws the chosen schedule's timeline (no weights needed)."""
    from effcore.cli import parse_bytes
    from effcore.device import known_spec
    from merak.capture import capture
    from merak.gantt import gantt
    from merak.models import load_model
    from merak.plan import plan_pipeline
    from merak.schedules import SCHEDULES
    from merak.simulate import Network, stage_costs
    from merak.simulate import simulate as run

    _positive(stages=stages, microbatches=microbatches, batch=batch, seq_len=seq_len)
    if schedule not in SCHEDULES:
        raise ConfigError(f"unknown --schedule {schedule!r}", hint=f"choose from {', '.join(SCHEDULES)}")
    if method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}", hint=f"choose from {', '.join(METHODS)}")
    if recompute is not None and not 0.0 <= recompute <= 1.0:
        raise ConfigError(f"--recompute must be in [0, 1], got {recompute}")
    link = parse_bytes(bandwidth, flag="--bandwidth")
    kinds = [k for k in SCHEDULES if microbatches >= stages or k in ("gpipe", "1f1b")]
    kinds = [k for k in kinds if k != "shifted-critical-path" or microbatches >= 4]
    if schedule not in kinds:
        raise ConfigError(f"{schedule} needs at least {max(stages, 4)} micro-batches, got {microbatches}")
    datasheet = known_spec(spec)
    lm = load_model(model, weights=False)
    dtype_bytes = next(lm.parameters()).element_size()
    captured = capture(lm, (batch, seq_len))
    rows, results = [], {}
    for kind in kinds:
        plan = plan_pipeline(captured, stages, method=method, recompute_ratio=recompute, schedule=kind,
                             spec=datasheet, bandwidth=link)  # fmt: skip
        costs = stage_costs(plan.stages, plan.costs, param_dtype_bytes=dtype_bytes)
        result = run(costs, kind, microbatches, network=Network(p2p_bandwidth=float(link)))
        results[kind] = result
        rows.append(
            {
                "schedule": kind,
                "step ms": result.step_s * 1e3,
                "bubble": result.bubble_overall,
                "peak MiB (max stage)": max(result.peak_bytes) / 2**20,
                "peak MiB per stage": " ".join(f"{b / 2**20:.0f}" for b in result.peak_bytes),
            }
        )
    title = (
        f"{model}: {stages} stages, {microbatches} x {batch}x{seq_len}, {spec} datasheet, {method} partition"
    )
    console.print(render_table(title, rows))
    if plot is not None:
        gantt(results[schedule], plot, title=f"{model}: {schedule}")
        console.print(f"wrote {plot}")
    payload = {"model": model, "spec": spec, "method": method, "recompute": recompute,
               "rows": rows, "results": {k: r.to_dict(timeline=False) for k, r in results.items()}}  # fmt: skip
    write_out(out, payload, rows=rows)


@app.command()
def bench(
    model: ModelOpt = "smollm2",
    stages: StagesOpt = 4,
    batch: BatchOpt = 1,
    seq_len: SeqOpt = 256,
    microbatches: Annotated[int, typer.Option("--microbatches", help="Micro-batches per step.")] = 8,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per case.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps per case first.")] = 1,
    cases: Annotated[
        str | None,
        typer.Option(
            "--cases", help="Semicolon-separated subset of the cases (default: all).", show_default=False
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Wall-clock limit of the whole job (s).")
    ] = 7200.0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Time every pipeline schedule on the same ranks (one per stage, gloo/NCCL): step time against
    torch's 1F1B, measured and simulated bubble, peak memory per stage, first-step loss."""
    from effcore.cli import progress_bar
    from effcore.distributed import run_job
    from merak.bench import BENCH_CASES, BenchJob, summarize

    chosen = [c.strip() for c in cases.split(";")] if cases else list(BENCH_CASES)
    job = BenchJob(model=model, stages=stages, batch=batch, seq_len=seq_len, microbatches=microbatches,
                   steps=steps, warmup=warmup, data_dir=str(data_dir) if data_dir else None, cases=chosen,
                   device=_device_name(device))  # fmt: skip
    if "torch-1f1b" not in job.cases:
        job.cases.insert(0, "torch-1f1b")  # the reference of every ratio
    if microbatches < stages:
        raise ConfigError(f"--microbatches must be at least --stages ({stages}) for the 1F1B family")
    _check_model(model, tp=1, seq_len=seq_len)
    done: dict = {}
    with progress_bar() as bar:
        bar.add_task(f"{len(job.cases)} cases on {stages} ranks", total=None)
        run_job("merak.worker", "bench", job.to_dict(), nproc=stages, timeout_s=timeout, rank_timeout_s=timeout,
                on_event=lambda e: done.update(e) if e.get("event") == "done" else None)  # fmt: skip
    rows = summarize(done["stages"], job)
    shown = ["case", "step s", "vs torch-1f1b", "spread s", "bubble", "sim step s", "sim error"]
    console.print(
        render_table(f"{model}: {stages} stages, {microbatches} x {batch}x{seq_len}", rows, columns=shown)
    )
    write_out(out, {"job": job.to_dict(), "rows": rows, "stages": done["stages"]}, rows=rows)
