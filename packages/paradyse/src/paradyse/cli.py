"""The ``paradyse`` command line: profile strategies, plan a sequence, simulate at scale, train."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    int_list,
    make_app,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError

app = make_app(
    "paradyse",
    "ParaDySe: pick, for every sequence, the fastest per-layer mix of parallel strategies that fits.\n\n"
    "[bold]paradyse profile[/] -m bench --nproc 4 -o prof.json: time the strategies (gloo)\n\n"
    "[bold]paradyse plan[/] -p prof.json --seq-len 8192: the plan for one length\n\n"
    "[bold]paradyse train[/] -p prof.json --nproc 4 --steps 30: train, switching per batch\n\n"
    "[bold]paradyse simulate[/] -m paper-7b --gpus 32: H100/H200 predictions up to 624K tokens\n\n"
    "Strategies: megatron (TP+SP), ulysses (all-to-all + ZeRO-3), ring (ring attention + ZeRO-3), "
    "metp (memory-minimal fallback).",
)

ModelOpt = Annotated[
    str,
    typer.Option("--model", "-m", help="Model shape: tiny, small, bench, paper-1b, paper-7b, paper-wide."),
]
ProfileOpt = Annotated[Path, typer.Option("--profile", "-p", help="Profile file from `paradyse profile`.")]
NprocOpt = Annotated[int, typer.Option("--nproc", help="Ranks (processes) on this machine.")]
CapOpt = Annotated[str, typer.Option("--memory-cap", help="Memory per rank, e.g. 2GiB, 512MiB, 80GB.")]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str) -> int:
    """``'2GiB'`` -> 2147483648 (B, KB/MB/GB decimal, KiB/MiB/GiB binary)."""
    import re

    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"cannot read a memory size from {text!r}", hint="write e.g. 2GiB, 512MiB or 80GB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@app.command()
def profile(
    model: ModelOpt = "bench",
    nproc: NprocOpt = 4,
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", help="Sequence lengths to time (multiples of --nproc).")
    ] = "256,512,1024,2048,4096",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed steps per point (median).")] = 3,
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated subset.")
    ] = "megatron,ulysses,ring,metp",
    switch: Annotated[
        bool, typer.Option("--switch/--no-switch", help="Also time mixed plans for the switch cost.")
    ] = True,
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit of the job (s).")] = 3600.0,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG of time per layer against sequence length.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the profile (JSON).")] = Path(
        "paradyse-profile.json"
    ),
) -> None:
    """Time every strategy's forward + backward per layer over sequence lengths on a gloo group."""
    from paradyse.config import STRATEGIES, check_sequence, get_model
    from paradyse.costmodel import Profile
    from paradyse.launch import run_job

    cfg = get_model(model)
    cfg.check_degree(nproc)
    lens = int_list(seq_lens, "--seq-lens")
    for s in lens:
        check_sequence(s, nproc)
    names = [k.strip() for k in strategies.split(",") if k.strip()]
    unknown = [k for k in names if k not in STRATEGIES]
    if unknown:
        raise ConfigError(
            f"unknown strategy {', '.join(unknown)}", hint=f"choose from {', '.join(STRATEGIES)}"
        )
    job = {"model": cfg.to_dict(), "seq_lens": lens, "strategies": names, "batch": 1, "repeats": repeats,
           "warmup": 1, "switch": switch, "out": str(out.resolve())}  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task(f"profiling {cfg.name} on {nproc} ranks", total=len(lens) * len(names))
        run_job("profile", job, nproc=nproc, timeout_s=timeout,
                on_event=lambda ev: bar.update(task, advance=1) if ev.get("event") == "point" else None)  # fmt: skip
    prof = Profile.load(out)
    _show_profile(prof)
    if plot:
        _plot_profile(prof, plot)


def _show_profile(prof) -> None:
    rows = [{"strategy": pt["strategy"], "seq_len": pt["seq_len"], "ms_per_layer": pt["layer_time_s"] * 1e3,
             "iqr_ms": pt["iqr_s"] * 1e3, "saved_MiB": pt["activation_bytes"] / 2**20,
             "analytic_MiB": pt["activation_bytes_analytic"] / 2**20} for pt in prof.points]  # fmt: skip
    console.print(
        render_table(f"profile: {prof.model.name} on {prof.world_size} ranks ({prof.hardware})", rows)
    )
    fits = [{"strategy": m.strategy, "c0_ms": m.coef[0] * 1e3, "c1_us_per_token": m.coef[1] * 1e6,
             "c2_ns_per_token2": m.coef[2] * 1e9, "cv_error": m.cv_error} for m in prof.time_models().values()]  # fmt: skip
    console.print(render_table("time models t(s) = c0 + c1 s + c2 s^2 per layer (k-fold CV error)", fits))
    console.print(f"switch cost per boundary: {prof.switch_cost_s * 1e3:.2f} ms")


def _plain_ticks(ax, values) -> None:
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xticks(list(values))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_profile(prof, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    models = prof.time_models()
    for k, m in models.items():
        pts = sorted((pt["seq_len"], pt["layer_time_s"]) for pt in prof.points if pt["strategy"] == k)
        xs, ys = zip(*pts, strict=True)
        line = ax.plot(xs, np.array(ys) * 1e3, "o", label=k)[0]
        grid = np.linspace(min(xs), max(xs) * 2, 100)
        ax.plot(grid, m.predict(grid) * 1e3, "-", color=line.get_color(), lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms per layer (fwd+bwd)",
           title=f"{prof.model.name}, {prof.world_size} ranks")  # fmt: skip
    _plain_ticks(ax, sorted({pt["seq_len"] for pt in prof.points}))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    err_console.print(f"wrote {path}")


@app.command()
def plan(
    profile_path: ProfileOpt = Path("paradyse-profile.json"),
    seq_len: Annotated[
        int, typer.Option("--seq-len", "-s", help="Tokens in the sequence (all ranks together).")
    ] = 4096,
    memory_cap: CapOpt = "16GiB",
    planner: Annotated[
        str, typer.Option("--planner", help="adaptive (ours) or paradyse (the paper's heuristic).")
    ] = "adaptive",
    out: OutOpt = None,
) -> None:
    """The plan for one sequence length: per-layer strategies, predicted time and memory."""
    from paradyse.config import check_sequence
    from paradyse.costmodel import Profile
    from paradyse.planner import CostTable, HeuristicState, Planner, compress, paradyse_plan

    prof = Profile.load(profile_path)
    p, cfg = prof.world_size, prof.model
    check_sequence(seq_len, p)
    cap = parse_bytes(memory_cap)
    table = CostTable.build(cfg, p, seq_len, prof.time_models())
    rows = [{"strategy": k, "ms_per_layer": table.time[k] * 1e3, "saved_MiB_per_layer": table.act[k] / 2**20,
             "transient_MiB": table.transient[k] / 2**20,
             "pure_plan_GiB": table.memory((k,) * cfg.layers) / 2**30,
             "fits": table.memory((k,) * cfg.layers) <= cap} for k in table.time]  # fmt: skip
    console.print(render_table(f"{cfg.name}, {seq_len} tokens on {p} ranks, cap {cap / 2**30:.2f} GiB", rows))
    t0 = time.perf_counter()
    if planner == "adaptive":
        chosen = Planner(cap=cap, layers=cfg.layers, switch_cost=prof.switch_cost_s).plan(table)
    elif planner == "paradyse":
        chosen = paradyse_plan(table, cap, HeuristicState())
    else:
        raise ConfigError(f"--planner {planner!r} is not adaptive or paradyse")
    ms = (time.perf_counter() - t0) * 1e3
    console.print(f"plan: [bold]{compress(chosen.layers)}[/]  predicted {chosen.seconds * 1e3:.1f} ms, "
                  f"{chosen.memory / 2**30:.2f} GiB per rank ({chosen.reason}; planned in {ms:.2f} ms)")  # fmt: skip
    result = {"seq_len": seq_len, "plan": list(chosen.layers), "seconds": chosen.seconds, "bytes": chosen.memory,
              "reason": chosen.reason, "strategies": rows}  # fmt: skip
    write_out(out, result, rows=rows)


@app.command()
def simulate(
    model: ModelOpt = "paper-7b",
    gpus: Annotated[
        int, typer.Option("--gpus", help="Parallel degree (GPUs in the sequence-parallel group).")
    ] = 32,
    hardware: Annotated[
        str, typer.Option("--hardware", help="H100, H200, A100, V100, or 'calibrated' (needs --profile).")
    ] = "H100",
    profile_path: Annotated[
        Path | None, typer.Option("--profile", "-p", help="A gloo profile: calibrate and report the error.")
    ] = None,
    distribution: Annotated[
        str, typer.Option("--distribution", help="longtail, uniform, bimodal or fixed.")
    ] = "longtail",
    min_len: Annotated[int, typer.Option("--min-len")] = 4096,
    max_len: Annotated[
        int, typer.Option("--max-len", help="Longest sequence (the paper reaches 624K).")
    ] = 638976,
    median: Annotated[int | None, typer.Option("--median", help="Median length (longtail).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Sequences drawn from the distribution.")] = 200,
    memory_cap: Annotated[str | None, typer.Option("--memory-cap", help="Default: the GPU's memory.")] = None,
    seed: SeedOpt = 0,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="PNG of time per strategy against length.")
    ] = None,
    out: OutOpt = None,
) -> None:
    """Predict per-sequence time and memory of every static strategy and the adaptive plan."""
    import numpy as np

    from paradyse.config import get_model
    from paradyse.costmodel import Profile
    from paradyse.data import LengthSampler
    from paradyse.simulate import calibrate, gpu_hardware
    from paradyse.simulate import simulate as run_sim

    cfg = get_model(model)
    cfg.check_degree(gpus)
    if profile_path is not None:
        prof = Profile.load(profile_path)
        hw_cal, errors = calibrate(prof)
        console.print(render_table(f"calibration on {prof.hardware}, {prof.world_size} ranks (leave-one-out)",
                                   [{"strategy": k, "mean_abs_rel_error": v} for k, v in errors.items()]))  # fmt: skip
        console.print(f"fitted: {hw_cal.flops / 1e9:.2f} GFLOP/s per rank, {hw_cal.bandwidth / 1e9:.2f} GB/s, "
                      f"{hw_cal.latency * 1e3:.3f} ms per collective")  # fmt: skip
    if hardware == "calibrated":
        if profile_path is None:
            raise ConfigError("--hardware calibrated needs --profile")
        hw = hw_cal
        if memory_cap is None:
            raise ConfigError("--hardware calibrated needs --memory-cap")
    else:
        hw = gpu_hardware(hardware)
    cap = parse_bytes(memory_cap) if memory_cap else None
    lens = LengthSampler(distribution=distribution, min_len=min_len, max_len=max_len, median=median,
                         multiple=gpus, seed=seed).sample(samples)  # fmt: skip
    sweep = sorted(
        {int(v) for v in np.geomspace(min_len, max_len, 12) // gpus * gpus} | {max_len // gpus * gpus}
    )
    curve = run_sim(cfg, gpus, hw, sweep, cap=cap)
    console.print(
        render_table(f"{cfg.name} on {gpus} x {hw.name}: seconds per step (blank: OOM)", curve["rows"])
    )
    dist_run = run_sim(cfg, gpus, hw, lens, cap=cap)
    summary = [{"method": m, **v} for m, v in dist_run["summary"].items()]
    console.print(render_table(f"{samples} sequences, {distribution} in [{min_len}, {max_len}]", summary))
    if plot:
        _plot_sim(curve, plot)
    write_out(out, {"curve": curve, "distribution": dist_run}, rows=summary)


def _plot_sim(curve: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from paradyse.config import STRATEGIES

    fig, ax = plt.subplots(figsize=(6, 4))
    rows = curve["rows"]
    for k in [*STRATEGIES, "adaptive"]:
        pts = [(r["seq_len"], r[f"{k}_s"]) for r in rows if r.get(f"{k}_s") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-" if k != "adaptive" else "k--", label=k, lw=1)
    ax.set(xscale="log", yscale="log", xlabel="sequence length (K tokens)", ylabel="seconds per step",
           title=f"{curve['model']} on {curve['p']} x {curve['hardware']}")  # fmt: skip
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    err_console.print(f"wrote {path}")


@app.command()
def train(
    profile_path: ProfileOpt = Path("paradyse-profile.json"),
    nproc: NprocOpt = 4,
    mode: Annotated[
        str, typer.Option("--mode", help="adaptive, paradyse (the paper's heuristic), or a static strategy.")
    ] = "adaptive",
    steps: Annotated[int, typer.Option("--steps", help="Training steps (one sequence each).")] = 30,
    distribution: Annotated[
        str, typer.Option("--distribution", help="longtail, uniform, bimodal or fixed.")
    ] = "longtail",
    min_len: Annotated[int, typer.Option("--min-len")] = 256,
    max_len: Annotated[int, typer.Option("--max-len")] = 4096,
    corpus: Annotated[
        str, typer.Option("--corpus", help="tinyshakespeare, wikitext2 or a text file (byte tokens).")
    ] = "tinyshakespeare",
    any_hardware: Annotated[
        bool, typer.Option("--any-hardware", help="Accept a profile measured on other hardware.")
    ] = False,
    memory_cap: CapOpt = "16GiB",
    measure_memory: Annotated[
        bool, typer.Option("--measure-memory", help="Track every step's real peak (slower).")
    ] = False,
    log: Annotated[Path, typer.Option("--log", help="Per-step JSONL log.")] = Path("paradyse-train.jsonl"),
    timeout: Annotated[float, typer.Option("--timeout", help="Wall-clock limit of the job (s).")] = 3600.0,
    fail_at: Annotated[
        str | None,
        typer.Option(
            "--fail-at", help="RANK:STEP: that rank dies there (tests the error path).", hidden=True
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
) -> None:
    """Train the byte-level LM with per-batch plans (torchrun on gloo); logs plan and time per step."""
    from paradyse.costmodel import Profile, hardware_id
    from paradyse.launch import run_job
    from paradyse.train import TrainArgs

    prof = Profile.load(profile_path)
    prof.check(model=prof.model, world_size=nproc, hardware=None if any_hardware else hardware_id("gloo"))
    log.unlink(missing_ok=True)
    failure = None
    if fail_at is not None:
        try:
            r, s = (int(v) for v in fail_at.split(":"))
        except ValueError:
            raise ConfigError(f"--fail-at takes RANK:STEP, got {fail_at!r}") from None
        failure = (r, s)
    args = TrainArgs(model=prof.model.to_dict(), profile=str(profile_path.resolve()), mode=mode, steps=steps,
                     distribution=distribution, min_len=min_len, max_len=max_len, corpus=corpus,
                     data_dir=str(data_dir) if data_dir else None, memory_cap=parse_bytes(memory_cap), seed=seed,
                     measure_memory=measure_memory, any_hardware=any_hardware, log=str(log.resolve()),
                     fail_at=failure)  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task(f"training ({mode}) on {nproc} ranks", total=steps)

        def on_event(ev: dict) -> None:
            if ev.get("event") == "step":
                bar.update(task, advance=1, description=f"step {ev['step']}: {ev.get('seq_len')} tokens")

        run_job("train", json.loads(args.to_json()), nproc=nproc, timeout_s=timeout, on_event=on_event)
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    _show_train(records, mode)
    write_out(out, records, rows=records)


def _show_train(records: list[dict], mode: str) -> None:
    ran = [r for r in records if not r.get("oom")]
    rows = [{"step": r["step"], "seq_len": r["seq_len"], "plan": r.get("plan") or "OOM",
             "predicted_ms": (r.get("predicted_s") or 0) * 1e3, "ms": (r.get("time_s") or 0) * 1e3,
             "loss": r.get("loss")} for r in records]  # fmt: skip
    console.print(render_table(f"training steps ({mode})", rows[-20:]))
    tokens = sum(r["seq_len"] for r in ran)
    seconds = sum(r["time_s"] for r in ran)
    console.print(f"{len(ran)} steps ran, {len(records) - len(ran)} would not fit the cap; "
                  f"{tokens / max(seconds, 1e-9):.0f} tokens/s over the steps that ran")  # fmt: skip
