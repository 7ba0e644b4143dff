"""Evoformer stack (CPU): peak memory and one step's time against sequence length, per technique.

    uv run python packages/delta/benchmarks/bench_evoformer.py --lengths 16,32,48,64 \\
        --out packages/delta/benchmarks/results/evoformer-cpu.json

With ``--limit 16GiB``: the longest length each form trains within that process memory (peak RSS of a
fresh process per form and length, see :mod:`delta.limits`), growing over ``--lengths``:

    uv run python packages/delta/benchmarks/bench_evoformer.py --limit 16GiB \\
        --lengths 128,256,320,384,448,512,576,640,768,896,1024 \\
        --out packages/delta/benchmarks/results/evoformer-limits-cpu.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from delta.evoformer import EvoformerConfig
from delta.limits import LIMIT_FORMS, evoformer_limits, longest
from delta.sweep import FORMS, evoformer_sweep
from effcore.cli import parse_bytes
from effcore.device import device_spec
from effcore.io import write_json
from effcore.provenance import run_meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="16,32,48,64")
    ap.add_argument(
        "--forms", default=None, help=f"default: {','.join(FORMS)}; with --limit: {','.join(LIMIT_FORMS)}"
    )
    ap.add_argument(
        "--limit", default=None, help="process memory limit, e.g. 16GiB: find each form's longest N"
    )
    ap.add_argument(
        "--max-seconds", type=float, default=None, help="with --limit: skip lengths predicted slower"
    )
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--delta-fraction", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = EvoformerConfig()
    t0 = time.perf_counter()
    meta = {"config": {f: getattr(cfg, f) for f in cfg.__slots__}}
    if args.limit is not None:
        limit = parse_bytes(args.limit)
        rows = evoformer_limits([int(n) for n in args.lengths.split(",")], (args.forms or ",".join(LIMIT_FORMS)).split(","),
                                limit=limit, max_seconds=args.max_seconds, chunk=args.chunk,
                                progress=lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True))  # fmt: skip
        for row in rows:
            print(row, flush=True)
        write_json(args.out, {**run_meta(started=t0, device="cpu"), **meta, "limit": limit,
                              "threads_per_length": 1, "longest": longest(rows, limit),
                              "rows": [r.to_dict() for r in rows]})  # fmt: skip
        return
    rows = evoformer_sweep([int(n) for n in args.lengths.split(",")], (args.forms or ",".join(FORMS)).split(","), cfg=cfg,
                           chunk=args.chunk, delta_fraction=args.delta_fraction,
                           bandwidth=device_spec("cpu").host_link_bandwidth,
                           progress=lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True))  # fmt: skip
    for row in rows:
        print(row, flush=True)
    write_json(args.out, {**run_meta(started=t0, device="cpu"), **meta, "rows": [r.to_dict() for r in rows]})


if __name__ == "__main__":
    main()
