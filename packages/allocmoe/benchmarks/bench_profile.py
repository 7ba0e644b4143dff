"""Alloc-L profiling time: the prefix cache against the naive L x K_orig full forwards, same run.

    uv run python packages/allocmoe/benchmarks/bench_profile.py --blocks 4 --block-size 256 --out prof-bench.json
    uv run python packages/allocmoe/benchmarks/bench_profile.py --model tiny:qwen2_moe   # smoke run

Both runs compute the same table (checked: max relative difference printed); the ratio is the
end-to-end profiling speedup. Repeats alternate the two methods; median and spread are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-moe")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from allocmoe.alloc_l import profile_sensitivity
    from allocmoe.data import eval_blocks
    from allocmoe.models import load_model

    lm = load_model(args.model, device=args.device)
    model, name = lm.model, lm.name
    calib = eval_blocks(model, lm.tokenizer, "calib", blocks=args.blocks, block_size=args.block_size)
    times: dict[str, list[float]] = {"prefix_cache": [], "naive": []}
    tables = {}
    for _ in range(args.repeats):
        for label, cached in (("prefix_cache", True), ("naive", False)):
            t0 = time.perf_counter()
            prof = profile_sensitivity(model, calib, batch_size=args.batch_size, prefix_cache=cached)
            times[label].append(time.perf_counter() - t0)
            tables[label] = prof.S
    diff = max(
        abs(a - b) / b
        for ra, rb in zip(tables["prefix_cache"], tables["naive"], strict=True)
        for a, b in zip(ra, rb, strict=True)
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: (min(v), max(v)) for k, v in times.items()}
    result = {
        "model": name,
        "entries": len(tables["naive"]) * len(tables["naive"][0]),
        "calibration": [args.blocks, args.block_size],
        "seconds_median": med,
        "seconds_min_max": spread,
        "speedup": med["naive"] / med["prefix_cache"],
        "max_relative_difference": diff,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
