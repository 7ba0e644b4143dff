"""Communication overlap on against off, same plan and weights, side by side on one gloo group.

    uv run python packages/paradyse/benchmarks/bench_overlap.py --world 4 --seq-len 2048 \\
        --out packages/paradyse/results/overlap_bench_world4.json

Two copies of the model, identical but for ``ModelConfig.overlap`` (prefetched ZeRO-3 gathers and
METP broadcasts, early KV sends in ring backward), time one forward + backward of each strategy in
turn (alternating, so that load on the machine hits both alike): the slowest rank's time
(``paradyse.profile.measure_step``), ``--reps`` times each after one warm-up. Megatron has no
overlapped collective: its ratio shows the noise. ``--out`` records the settings with every time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path


def _bench(rank: int, world: int, opts: dict) -> dict:
    import torch

    from paradyse.config import get_model
    from paradyse.model import ParallelTransformer
    from paradyse.profile import measure_step

    base = get_model(opts["model"])
    models = {on: ParallelTransformer(dataclasses.replace(base, overlap=on)) for on in (False, True)}
    s = opts["seq_len"]
    x = torch.randn(1, s, base.hidden, generator=torch.Generator().manual_seed(s))
    local = x[:, rank * (s // world) : (rank + 1) * (s // world)].clone().requires_grad_(True)
    times: dict[str, dict[str, list[float]]] = {}
    for plan in opts["plans"]:
        times[plan] = {"off": [], "on": []}
        for on in (False, True):  # warm-up
            measure_step(models[on], plan, local, repeats=1, warmup=0)
        for _ in range(opts["reps"]):
            for on in (False, True):
                med, _ = measure_step(models[on], plan, local, repeats=1, warmup=0)
                times[plan]["on" if on else "off"].append(med)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="bench")
    ap.add_argument("--world", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--plans", default="megatron,ulysses,ring,metp")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console

    from effcore.cli import render_table
    from effcore.device import cpu_model
    from effcore.io import check_writable
    from effcore.testing.distributed import launch
    from paradyse.config import check_plan, check_sequence, get_model

    if args.out is not None:
        check_writable(args.out, suffixes=(".json",))
    cfg = get_model(args.model)
    cfg.check_degree(args.world)
    check_sequence(args.seq_len, args.world, cfg)
    plans = [k.strip() for k in args.plans.split(",") if k.strip()]
    for k in plans:
        check_plan(k, cfg.layers)
    if args.reps < 1:
        ap.error(f"--reps must be >= 1, got {args.reps}")
    opts = {"model": args.model, "seq_len": args.seq_len, "plans": plans, "reps": args.reps}
    t0 = time.perf_counter()
    times = launch(_bench, args.world, opts, timeout_s=3600)[0]
    rows = []
    for plan, t in times.items():
        off, on = statistics.median(t["off"]), statistics.median(t["on"])
        ratios = sorted(a / b for a, b in zip(t["off"], t["on"], strict=True))
        rows.append({"plan": plan, "off_ms": off * 1e3, "on_ms": on * 1e3, "speedup": off / on,
                     "pair_ratio_min": ratios[0], "pair_ratio_max": ratios[-1]})  # fmt: skip
    Console().print(render_table(f"{args.model}, {args.seq_len} tokens on {args.world} gloo ranks: overlap off vs on "
                                 f"({time.perf_counter() - t0:.0f} s)", rows))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"settings": {**opts, "world": args.world, "machine": cpu_model()},
                                        "summary": rows, "times_s": times}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
