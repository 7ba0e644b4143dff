"""How long planning one sequence takes: our exact planner against the paper's heuristic.

    uv run python packages/paradyse/benchmarks/bench_planner.py --repeat 200

Cost tables come from the paper's time fits (``time_calculator.py``, L=32/H=4096, per layer) and the
analytic memory model of the 7B shape on 8 GPUs, at lengths from 4K to 256K and an 80 GiB cap; each
planner is timed ``--repeat`` times per table (a fresh planner each time: no previous plan is kept).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--layers", type=int, nargs="*", default=[4, 32, 80])
    args = ap.parse_args()

    import dataclasses

    from rich.console import Console

    from effcore.cli import render_table
    from paradyse.config import MODELS, PlanError
    from paradyse.costmodel import paper_time_models
    from paradyse.planner import CostTable, GiB, HeuristicState, Planner, paradyse_plan

    rows = []
    for L in args.layers:
        cfg = dataclasses.replace(MODELS["paper-7b"], layers=L)
        models = paper_time_models(32)
        tables = [CostTable.build(cfg, 8, s, models) for s in (4096, 32768, 98304, 131072, 196608)]
        ours = Planner(cap=80 * GiB, layers=L)
        ours.plan(tables[0])  # build the count grids once per layer count (a planner is long-lived)
        methods = {
            "adaptive (ours)": lambda t, n=L, grid=ours._comps: Planner(
                cap=80 * GiB, layers=n, _comps=grid
            ).plan(t),
            "paradyse heuristic": lambda t: paradyse_plan(t, 80 * GiB, HeuristicState()),
        }
        for name, fn in methods.items():
            times = []
            for t in tables:
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    with contextlib.suppress(PlanError):
                        fn(t)
                    times.append(time.perf_counter() - t0)
            q = statistics.quantiles(times, n=4, method="inclusive")
            rows.append({"layers": L, "planner": name, "median_us": q[1] * 1e6, "iqr_us": (q[2] - q[0]) * 1e6,
                         "max_us": max(times) * 1e6})  # fmt: skip
    Console().print(render_table("planning time per sequence", rows))


if __name__ == "__main__":
    main()
