"""vector_search latency on MultiTQ: default vs compat mode, by filter shape; median and spread of repeats.

Run: OMP_NUM_THREADS=1 uv run python packages/tkgqa/benchmarks/bench_search.py [--repeats 20] [--out bench.json]
Needs the cached MiniLM index (`tkgqa index`). Query embedding is cached after the first call, so the numbers
are the store + scoring + sorting cost of one call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from effcore.io import write_json
from tkgqa.runtime import open_runtime
from tkgqa.search import SearchTool

CASES = {
    "no filter, relevance": {"query": "visit China"},
    "no filter, time_asc": {"query": "visit China", "sort": "time_asc"},
    "entity (back), time_asc": {"query": "visit China", "entity_filter_name": "China", "entity_filter_position": "back", "sort": "time_asc"},
    "entity + relation + window": {"query": "visit China", "entity_filter_name": "China", "entity_filter_position": "back",
                                   "relation_filter": "Make_a_visit", "start_date": "2010-01-01", "end_date": "2010-12-31"},
}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rt = open_runtime("multitq")
    rows = []
    for mode in ("default", "compat"):
        tool = SearchTool(rt.store, rt.index, rt.encoder, mode=mode)
        for name, call in CASES.items():
            tool.search(**call)  # warm: query embedding cached
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                tool.search(**call)
                times.append((time.perf_counter() - t0) * 1e3)
            med = statistics.median(times)
            spread = (max(times) - min(times)) / 2
            rows.append(
                {"mode": mode, "case": name, "median_ms": round(med, 2), "spread_ms": round(spread, 2)}
            )
            print(f"{mode:8s} {name:30s} {med:8.2f} ms  ±{spread:.2f}")
    for name in CASES:
        d = next(r for r in rows if r["mode"] == "default" and r["case"] == name)["median_ms"]
        c = next(r for r in rows if r["mode"] == "compat" and r["case"] == name)["median_ms"]
        print(f"ratio default/compat {name:30s} {d / c:6.2f}")
    if args.out:
        write_json(args.out, rows)


if __name__ == "__main__":
    main()
