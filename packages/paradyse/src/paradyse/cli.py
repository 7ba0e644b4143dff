"""The ``paradyse`` command line: profile strategies, plan a sequence, simulate at scale, train."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    PlotOpt,
    SeedOpt,
    console,
    err_console,
    int_list,
    make_app,
    out_option,
    parse_bytes,
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
MarginOpt = Annotated[
    str,
    typer.Option(
        "--margin",
        help="Memory of the cap kept free by every planner (what the model does not count). 0 on these "
        "gloo CPU runs, where every measured step peaked at or below its prediction (tested); on GPUs "
        "the authors keep 512MiB for the allocator and the CUDA context.",
    ),
]
HysteresisOpt = Annotated[
    float,
    typer.Option(
        "--hysteresis",
        help="Adaptive planner: keep the previous sequence's plan while it fits and is within this "
        "fraction of the optimum (the paper: 0.05). 0: always the optimum, so never slower than a "
        "static strategy that fits.",
    ),
]
OverlapOpt = Annotated[
    bool,
    typer.Option(
        "--overlap/--no-overlap",
        help="Start ZeRO-3 gathers and METP broadcasts before their weights are needed and send ring "
        "attention's KV early in backward (same results). The profile must be measured the same way.",
    ),
]
RingLayoutOpt = Annotated[
    str,
    typer.Option(
        "--ring-layout",
        help="Ring attention's sequence layout: contiguous, or zigzag (equal causal work on every rank; "
        "lengths must divide by 2 x --nproc). The profile must be measured the same way.",
    ),
]
BackendOpt = Annotated[
    str,
    typer.Option("--backend", help="Collectives: auto (nccl on CUDA, gloo on the CPU), nccl or gloo."),
]
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="With --hysteresis: keep a previous plan only while it is also no slower than every static "
        "strategy that fits (never slower than a static plan, by the cost model).",
    ),
]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Wall-clock limit of the job (s).")]
RankTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--rank-timeout", help="How long a rank waits for another in a collective before it stops (s)."
    ),
]


def _model(name: str, overlap: bool, ring_layout: str):
    import dataclasses

    from paradyse.config import get_model

    return dataclasses.replace(get_model(name), overlap=overlap, ring_layout=ring_layout)


def _cap_and_margin(memory_cap: str, margin: str) -> tuple[int, int]:
    cap, kept = parse_bytes(memory_cap), parse_bytes(margin, flag="--margin", positive=False)
    if kept >= cap:
        raise ConfigError(f"--margin {margin} leaves nothing of --memory-cap {memory_cap}")
    return cap, kept


@app.command()
def profile(
    model: ModelOpt = "bench",
    nproc: NprocOpt = 4,
    seq_lens: Annotated[
        str, typer.Option("--seq-lens", help="At least 3 sequence lengths to time (multiples of --nproc).")
    ] = "256,512,1024,2048,4096",
    repeats: Annotated[int, typer.Option("--repeats", help="Timed steps per point (median).")] = 3,
    strategies: Annotated[
        str, typer.Option("--strategies", help="Comma-separated subset.")
    ] = "megatron,ulysses,ring,metp",
    switch: Annotated[
        bool | None,
        typer.Option(
            "--switch/--no-switch",
            help="Also time mixed plans for the switch cost (default: when >= 2 strategies and layers).",
            show_default=False,
        ),
    ] = None,
    overlap: OverlapOpt = False,
    ring_layout: RingLayoutOpt = "contiguous",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "auto",
    timeout: TimeoutOpt = 3600.0,
    rank_timeout: RankTimeoutOpt = 60.0,
    plot: PlotOpt = None,
    out: Annotated[Path, out_option("Where to write the profile (JSON).", suffixes=(".json",))] = Path(
        "paradyse-profile.json"
    ),
) -> None:
    """Time every strategy's forward + backward per layer over sequence lengths (NCCL on GPUs, gloo on CPUs)."""
    from effcore.distributed import run_job
    from paradyse.config import STRATEGIES, check_sequence
    from paradyse.costmodel import Profile
    from paradyse.placement import resolve_placement
    from paradyse.plots import plot_profile

    cfg = _model(model, overlap, ring_layout)
    place = resolve_placement(device, backend, nproc=nproc, cfg=cfg)
    lens = int_list(seq_lens, "--seq-lens")
    if len(set(lens)) < 3:
        raise ConfigError(
            f"--seq-lens needs at least 3 different lengths to fit a time model, got {seq_lens!r}",
            hint="e.g. 256,512,1024,2048,4096",
        )
    for s in lens:
        check_sequence(s, nproc, cfg)
    names = [k.strip() for k in strategies.split(",") if k.strip()]
    unknown = [k for k in names if k not in STRATEGIES]
    if unknown or not names or len(set(names)) != len(names):
        raise ConfigError(
            f"--strategies {strategies!r}: give distinct names", hint=f"choose from {', '.join(STRATEGIES)}"
        )
    if repeats < 1:
        raise ConfigError(f"--repeats must be >= 1, got {repeats}")
    can_switch = len(names) >= 2 and cfg.layers >= 2
    if switch and not can_switch:
        raise ConfigError("--switch needs at least 2 strategies and a model of at least 2 layers")
    job = {"model": cfg.to_dict(), "seq_lens": lens, "strategies": names, "batch": 1, "repeats": repeats,
           "warmup": 1, "switch": can_switch if switch is None else switch, "out": str(out.resolve()),
           "device": place.device, "backend": place.backend}  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task(
            f"profiling {cfg.name} on {nproc} ranks ({place.backend})", total=len(lens) * len(names)
        )
        run_job("paradyse.worker", "profile", job, nproc=nproc, timeout_s=timeout, rank_timeout_s=rank_timeout,
                on_event=lambda ev: bar.update(task, advance=1) if ev.get("event") == "point" else None)  # fmt: skip
    prof = Profile.load(out)
    _show_profile(prof)
    if plot:
        err_console.print(f"wrote {plot_profile(prof, plot)}")


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


@app.command()
def plan(
    profile_path: ProfileOpt = Path("paradyse-profile.json"),
    seq_len: Annotated[
        int, typer.Option("--seq-len", "-s", help="Tokens in the sequence (all ranks together).")
    ] = 4096,
    memory_cap: CapOpt = "16GiB",
    margin: MarginOpt = "0",
    planner: Annotated[
        str, typer.Option("--planner", help="adaptive (ours) or paradyse (the paper's heuristic).")
    ] = "adaptive",
    out: OutOpt = None,
) -> None:
    """The plan for one sequence length: per-layer strategies, predicted time and memory."""
    from paradyse.config import check_sequence
    from paradyse.costmodel import Profile
    from paradyse.planner import CostTable, HeuristicState, Planner, compress, paradyse_plan

    if planner not in ("adaptive", "paradyse"):
        raise ConfigError(f"--planner {planner!r} is not adaptive or paradyse")
    cap, kept = _cap_and_margin(memory_cap, margin)
    prof = Profile.load(profile_path)
    p, cfg = prof.world_size, prof.model
    check_sequence(seq_len, p, cfg)
    table = CostTable.build(cfg, p, seq_len, prof.time_models())
    rows = [{"strategy": k, "ms_per_layer": table.time[k] * 1e3, "saved_MiB_per_layer": table.act[k] / 2**20,
             "transient_MiB": table.transient[k] / 2**20,
             "pure_plan_GiB": table.memory((k,) * cfg.layers) / 2**30,
             "fits": table.memory((k,) * cfg.layers) <= cap - kept} for k in table.time]  # fmt: skip
    console.print(render_table(f"{cfg.name}, {seq_len} tokens on {p} ranks, cap {cap / 2**30:.2f} GiB", rows))
    t0 = time.perf_counter()
    if planner == "adaptive":
        chosen = Planner(cap=cap, margin=kept, layers=cfg.layers, switch_cost=prof.switch_cost_s).plan(table)
    else:
        chosen = paradyse_plan(table, cap, HeuristicState(), margin=kept)
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
    median: Annotated[int | None, typer.Option("--median", help="Median length (longtail, bimodal).")] = None,
    samples: Annotated[int, typer.Option("--samples", help="Sequences drawn from the distribution.")] = 200,
    memory_cap: Annotated[str | None, typer.Option("--memory-cap", help="Default: the GPU's memory.")] = None,
    margin: Annotated[
        str,
        typer.Option("--margin", help="Memory of the cap kept free by every method (the authors': 512MiB)."),
    ] = "512MiB",
    hysteresis: HysteresisOpt = 0.0,
    strict: StrictOpt = False,
    seed: SeedOpt = 0,
    plot: PlotOpt = None,
    out: OutOpt = None,
) -> None:
    """Predict per-sequence time and memory of every static strategy, the paper's heuristic and ours."""
    import numpy as np

    from paradyse.config import get_model
    from paradyse.costmodel import Profile
    from paradyse.data import LengthSampler
    from paradyse.plots import plot_simulation
    from paradyse.simulate import calibrate, gpu_hardware
    from paradyse.simulate import simulate as run_sim

    cfg = get_model(model)
    cfg.check_degree(gpus)
    if hardware == "calibrated" and (profile_path is None or memory_cap is None):
        raise ConfigError("--hardware calibrated needs --profile and --memory-cap")
    hw = None if hardware == "calibrated" else gpu_hardware(hardware)
    cap = parse_bytes(memory_cap) if memory_cap is not None else hw.memory_bytes
    kept = parse_bytes(margin, flag="--margin", positive=False)
    if kept >= cap:
        raise ConfigError(f"--margin {margin} leaves nothing of the {cap / 2**30:.1f} GiB memory cap")
    if hysteresis < 0:
        raise ConfigError(f"--hysteresis must be >= 0, got {hysteresis}")
    if strict and not hysteresis:
        raise ConfigError(
            "--strict applies with --hysteresis > 0 only (without one every plan is the optimum)"
        )
    if samples < 1:
        raise ConfigError(f"--samples must be >= 1, got {samples}")
    lens = LengthSampler(distribution=distribution, min_len=min_len, max_len=max_len, median=median,
                         multiple=gpus, seed=seed).sample(samples)  # fmt: skip
    if profile_path is not None:
        prof = Profile.load(profile_path)
        hw_cal, errors = calibrate(prof)
        console.print(render_table(f"calibration on {prof.hardware}, {prof.world_size} ranks (leave-one-out)",
                                   [{"strategy": k, "mean_abs_rel_error": v} for k, v in errors.items()]))  # fmt: skip
        console.print(f"fitted: {hw_cal.flops / 1e9:.2f} GFLOP/s per rank, {hw_cal.bandwidth / 1e9:.2f} GB/s, "
                      f"{hw_cal.latency * 1e3:.3f} ms per collective")  # fmt: skip
        hw = hw or hw_cal
    sweep = sorted(
        {int(v) for v in np.geomspace(min_len, max_len, 12) // gpus * gpus} | {max_len // gpus * gpus}
    )
    curve = run_sim(cfg, gpus, hw, sweep, cap=cap, margin=kept, hysteresis=hysteresis, strict=strict)
    console.print(
        render_table(f"{cfg.name} on {gpus} x {hw.name}: seconds per step (blank: OOM)", curve["rows"])
    )
    dist_run = run_sim(cfg, gpus, hw, lens, cap=cap, margin=kept, hysteresis=hysteresis, strict=strict)
    summary = [{"method": m, **v} for m, v in dist_run["summary"].items()]
    console.print(render_table(f"{samples} sequences, {distribution} in [{min_len}, {max_len}]", summary))
    ad = dist_run["summary"]["adaptive"]
    console.print(f"adaptive (hysteresis {hysteresis:g}{', strict' if strict else ''}): slower than the fastest "
                  f"static strategy that fits on {ad['slower_than_best_static']} of {samples} sequences "
                  f"(worst ratio {ad['worst_ratio_to_best_static']:.3f}, mean {ad['mean_ratio_when_slower']:.3f}; "
                  f"{ad['seconds_over_best_static']:.3g} s lost of {ad['seconds']:.4g} s)")  # fmt: skip
    if plot:
        err_console.print(f"wrote {plot_simulation(curve, plot)}")
    lengths = {"distribution": distribution, "min_len": min_len, "max_len": max_len, "median": median,
               "samples": samples, "seed": seed}  # fmt: skip
    write_out(out, {"lengths": lengths, "curve": curve, "distribution": dist_run}, rows=summary)


@app.command()
def train(
    model: ModelOpt = "bench",
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
    margin: MarginOpt = "0",
    hysteresis: HysteresisOpt = 0.0,
    strict: StrictOpt = False,
    measure_memory: Annotated[
        bool, typer.Option("--measure-memory", help="Track every step's real peak (slower).")
    ] = False,
    log: Annotated[
        Path, out_option("Per-step log (JSON lines).", suffixes=(".jsonl",), flag="--log", short=None)
    ] = Path("paradyse-train.jsonl"),
    overlap: OverlapOpt = False,
    ring_layout: RingLayoutOpt = "contiguous",
    device: DeviceOpt = "auto",
    backend: BackendOpt = "auto",
    timeout: TimeoutOpt = 3600.0,
    rank_timeout: RankTimeoutOpt = 60.0,
    fail_at: Annotated[
        str | None,
        typer.Option(
            "--fail-at",
            help="RANK:STEP[:exit|error|hang]: inject that fault (tests the error paths).",
            hidden=True,
        ),
    ] = None,
    data_dir: DataDirOpt = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
) -> None:
    """Train the byte-level LM with per-batch plans under torchrun; logs plan and time per step."""
    from effcore.distributed import run_job
    from paradyse.costmodel import Profile, hardware_id
    from paradyse.placement import resolve_placement
    from paradyse.train import TrainArgs

    cfg = _model(model, overlap, ring_layout)
    place = resolve_placement(device, backend, nproc=nproc, cfg=cfg)
    cap, kept = _cap_and_margin(memory_cap, margin)
    args = TrainArgs(model=cfg.to_dict(), profile=str(profile_path.resolve()), mode=mode, steps=steps,
                     distribution=distribution, min_len=min_len, max_len=max_len, corpus=corpus,
                     data_dir=str(data_dir) if data_dir else None, memory_cap=cap, margin=kept,
                     hysteresis=hysteresis, strict=strict, seed=seed, measure_memory=measure_memory, any_hardware=any_hardware,
                     log=str(log.resolve()), fail_at=_fault(fail_at), device=place.device,
                     backend=place.backend)  # fmt: skip
    prof = Profile.load(profile_path)
    hardware = hardware_id(place.backend, place.device_name())
    prof.check(model=cfg, world_size=nproc, hardware=None if any_hardware else hardware)
    args.stream(nproc)  # the lengths and the corpus, checked before any rank starts
    log.unlink(missing_ok=True)
    with progress_bar() as bar:
        task = bar.add_task(f"training ({mode}) on {nproc} ranks ({place.backend})", total=steps)

        def on_event(ev: dict) -> None:
            if ev.get("event") == "step":
                bar.update(task, advance=1, description=f"step {ev['step']}: {ev.get('seq_len')} tokens")

        run_job("paradyse.worker", "train", json.loads(args.to_json()), nproc=nproc, timeout_s=timeout, rank_timeout_s=rank_timeout,
                on_event=on_event)  # fmt: skip
    records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    _show_train(records, mode)
    write_out(out, records, rows=records)


def _fault(text: str | None) -> tuple[int, int, str] | None:
    if text is None:
        return None
    parts = text.split(":")
    try:
        rank, step = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ConfigError(f"--fail-at takes RANK:STEP[:KIND], got {text!r}") from None
    return rank, step, parts[2] if len(parts) > 2 else "exit"


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
