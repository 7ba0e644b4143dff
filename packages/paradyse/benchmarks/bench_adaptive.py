"""Adaptive plans against every static strategy on one dynamic-length stream, side by side (gloo or NCCL).

    uv run paradyse profile -m bench --nproc 4 -o prof.json      # once, on a quiet machine
    uv run python packages/paradyse/benchmarks/bench_adaptive.py --model bench --profile prof.json \\
        --steps 24 --min-len 256 --max-len 4096 --cap auto --out bench-adaptive.json

One process group of as many ranks as the profile was measured on; one model per method, identically
initialised. Every step draws one sequence (log-normal lengths over real text, ``paradyse.data``)
and every method trains on it in turn (alternating, so drift hits all alike): ``adaptive`` (our
planner, ``--hysteresis``), ``paradyse`` (the paper's heuristic, with its 5 % hysteresis) and the
four static strategies. A method whose plan does not fit the memory cap less ``--margin`` (analytic
model) skips the step and counts an OOM. With ``--measure-memory`` (default) each method's real
peak on each step is tracked in a second, untimed pass and compared with the cap.

``--cap auto`` sets the cap 15 % above what the leanest plan needs at ``--max-len``: the fast
strategies then run out on the longest sequences. Each step is timed ``--reps`` times per method
(the fastest counts: the machine may be shared). ``adaptive_speedup_on_common`` is a static
strategy's total time over the adaptive plan's on the steps both could run; the median and IQR of
the per-step ratios and how often the two chose the same plan are reported too. ``--out`` records
the settings with the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch


def _bench(rank: int, world: int, opts: dict) -> dict:
    import torch.distributed as dist

    from paradyse.config import STRATEGIES, ModelConfig, PlanError
    from paradyse.costmodel import Profile
    from paradyse.data import LengthSampler, TextStream, load_corpus
    from paradyse.memory_model import lm_bytes
    from paradyse.placement import PeakMemory, Placement
    from paradyse.planner import CostTable, HeuristicState, Planner, compress, paradyse_plan
    from paradyse.train import ParadyseLM, train_step

    place = Placement(device=opts["device"], backend=opts["backend"])
    dev = (
        torch.device("cuda", rank) if place.device == "cuda" else torch.device("cpu")
    )  # launch: one GPU a rank
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    prof = Profile.load(opts["profile"])
    cfg = ModelConfig.from_dict(opts["model"])  # checked against the profile before the launch
    models = prof.time_models()
    cap, margin = opts["cap"], opts["margin"]
    limit = cap - margin
    methods = ["adaptive", "paradyse", *STRATEGIES]
    nets = {m: ParadyseLM(cfg, seed=0, device=dev) for m in methods}
    opts_ = {m: torch.optim.AdamW(nets[m].parameters(), lr=3e-4) for m in methods}
    planner = Planner(cap=cap, margin=margin, layers=cfg.layers, switch_cost=prof.switch_cost_s,
                      hysteresis=opts["hysteresis"], strict=opts["strict"])  # fmt: skip
    heuristic = HeuristicState()
    lengths = LengthSampler(min_len=opts["min_len"], max_len=opts["max_len"], multiple=cfg.seq_multiple(world), seed=opts["seed"],
                            median=opts["median"])  # fmt: skip
    stream = TextStream(load_corpus(opts["corpus"]), lengths, steps=opts["steps"])
    rows = []
    for step, (tokens, targets) in enumerate(stream):
        s = tokens.shape[1]
        table = CostTable.build(cfg, world, s, models, extra_bytes=lm_bytes(cfg, s, world))
        sl = s // world
        local = (
            tokens[:, rank * sl : (rank + 1) * sl].to(dev),
            targets[:, rank * sl : (rank + 1) * sl].to(dev),
        )
        for m in methods:
            row = {"step": step, "seq_len": s, "method": m}
            try:
                if m == "adaptive":
                    plan = planner.plan(table).layers
                elif m == "paradyse":
                    plan = paradyse_plan(table, cap, heuristic, margin=margin).layers
                    if table.memory(plan) > limit:
                        raise PlanError("over the cap")
                else:
                    plan = (m,) * cfg.layers
                    if table.memory(plan) > limit:
                        raise PlanError("over the cap")
            except PlanError:
                rows.append({**row, "oom": True})
                continue
            best = float("inf")
            for _ in range(opts["reps"]):  # the fastest of `reps` identical steps: less noise from other jobs
                dist.barrier()
                t0 = time.perf_counter()
                train_step(nets[m], opts_[m], *local, plan, s)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                elapsed = torch.tensor([time.perf_counter() - t0], device=dev)
                dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
                best = min(best, float(elapsed))
            elapsed = best
            row.update(
                oom=False, plan=compress(plan), seconds=float(elapsed), predicted_bytes=table.memory(plan)
            )
            if opts["measure_memory"]:
                with PeakMemory(nets[m], dev) as tracker:
                    train_step(nets[m], opts_[m], *local, plan, s)
                peak = torch.tensor([float(tracker.peak)], device=dev)
                dist.all_reduce(peak, op=dist.ReduceOp.MAX)
                row["peak_bytes"] = int(peak)
            rows.append(row)
        if rank == 0:
            print(json.dumps({"step": step, "seq_len": s}), flush=True)
    return {"rows": rows, "cap": cap}


def _summary(rows: list[dict], cap: int) -> list[dict]:
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["step"]] = r
    ada = by["adaptive"]
    out = []
    for m, steps in by.items():
        ran = {k: r for k, r in steps.items() if not r["oom"]}
        common = [k for k in ran if not ada[k]["oom"]]
        tokens = sum(ran[k]["seq_len"] for k in ran)
        secs = sum(ran[k]["seconds"] for k in ran)
        ratios = [ran[k]["seconds"] / ada[k]["seconds"] for k in common]
        q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [float("nan")] * 3
        peaks = [ran[k].get("peak_bytes", 0) for k in ran]
        same = sum(ran[k].get("plan") == ada[k].get("plan") for k in common)
        out.append({
            "method": m, "steps_run": len(ran), "oom_steps": len(steps) - len(ran),
            "tokens_per_s": tokens / secs if secs else 0.0,
            "adaptive_speedup_on_common": sum(ran[k]["seconds"] for k in common) / max(1e-12, sum(ada[k]["seconds"] for k in common)),
            "step_ratio_median": statistics.median(ratios) if ratios else float("nan"), "step_ratio_iqr": q[2] - q[0],
            "same_plan_as_adaptive": f"{same}/{len(common)}",
            "max_peak_MiB": max(peaks, default=0) / 2**20, "peak_over_cap": any(p > cap for p in peaks),
        })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bench", help="the model shape; the profile must be of it")
    ap.add_argument("--profile", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--min-len", type=int, default=256)
    ap.add_argument("--max-len", type=int, default=4096)
    ap.add_argument("--median", type=int, default=None)
    ap.add_argument("--cap", default="auto", help="bytes per rank, a size like 1GiB, or auto")
    ap.add_argument("--margin", default="0", help="memory of the cap kept free by every method")
    ap.add_argument(
        "--hysteresis", type=float, default=0.0, help="our planner's (the paper's heuristic: 0.05)"
    )
    ap.add_argument(
        "--strict", action="store_true", help="our planner's strict hysteresis (needs --hysteresis)"
    )
    ap.add_argument("--corpus", default="tinyshakespeare")
    ap.add_argument("--no-measure-memory", action="store_true")
    ap.add_argument("--reps", type=int, default=2, help="timed repeats of each step (the fastest counts)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    ap.add_argument("--backend", default="auto", help="auto (nccl on CUDA, gloo on the CPU), nccl or gloo")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console

    from effcore.cli import parse_bytes, render_table
    from effcore.io import check_writable
    from effcore.testing.distributed import launch
    from paradyse.config import get_model
    from paradyse.costmodel import Profile
    from paradyse.memory_model import lm_bytes
    from paradyse.placement import resolve_placement
    from paradyse.planner import CostTable

    if args.out is not None:
        check_writable(args.out, suffixes=(".json",))
    prof = Profile.load(args.profile)
    world = prof.world_size
    prof.check(model=get_model(args.model), world_size=world)
    place = resolve_placement(args.device, args.backend, nproc=world, cfg=prof.model)
    if args.cap == "auto":
        s = args.max_len // world * world
        table = CostTable.build(
            prof.model, world, s, prof.time_models(), extra_bytes=lm_bytes(prof.model, s, world)
        )
        cap = int(1.15 * min(table.memory((k,) * prof.model.layers) for k in table.time))
    else:
        cap = parse_bytes(args.cap)
    margin = parse_bytes(args.margin, flag="--margin", positive=False)
    if args.strict and not args.hysteresis:
        ap.error("--strict applies with --hysteresis > 0 only")
    opts = {"profile": str(args.profile), "model": get_model(args.model).to_dict(), "steps": args.steps,
            "min_len": args.min_len, "max_len": args.max_len, "median": args.median, "cap": cap, "margin": margin,
            "hysteresis": args.hysteresis, "strict": args.strict, "corpus": args.corpus, "measure_memory": not args.no_measure_memory,
            "seed": args.seed, "reps": args.reps, "device": place.device, "backend": place.backend}  # fmt: skip
    t0 = time.perf_counter()
    res = launch(_bench, world, opts, backend=place.backend, timeout_s=7200)[0]
    summary = _summary(res["rows"], cap)
    console = Console()
    console.print(render_table(f"{prof.model.name} on {world} {place.backend} ranks, cap {cap / 2**20:.0f} MiB, "
                               f"{args.steps} steps ({time.perf_counter() - t0:.0f} s)", summary))  # fmt: skip
    if args.out:
        args.out.write_text(
            json.dumps({"settings": opts, "cap": cap, "summary": summary, "rows": res["rows"]}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
