"""What GRASS's layer-wise optimizer-state offload adds to a step, against keeping the state resident.

Peer: the same ``LayerwiseAdamW`` step with ``offload="none"`` (the state of the active layers stays
on the device, as in LISA). Pairs of steps alternate so that noise hits both sides; prints and
writes the median ratio and its spread, with the command, machine and wall time.

    uv run python packages/grass/benchmarks/bench_offload.py --pairs 7 \\
        --out packages/grass/results/bench_offload_cpu.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from effcore.device import infer_device
from effcore.io import write_json
from effcore.provenance import run_meta
from grass.bench import bench_offload


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--gamma", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    dev = infer_device(args.device)
    r = bench_offload(
        model=args.model,
        gamma=args.gamma,
        batch=args.batch,
        seq_len=args.seq_len,
        pairs=args.pairs,
        device=dev,
    )
    data = {
        **dataclasses.asdict(r),
        "overhead": r.overhead,
        "settings": vars(args) | {"out": str(args.out) if args.out else None},
        **run_meta(started=t0, device=dev),
    }  # fmt: skip
    print(json.dumps(data, indent=2))
    if args.out:
        write_json(args.out, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
