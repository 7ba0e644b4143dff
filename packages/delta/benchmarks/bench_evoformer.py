"""Evoformer stack (CPU): peak memory and one step's time against sequence length, per technique.

    uv run python packages/delta/benchmarks/bench_evoformer.py --lengths 16,32,48,64 \\
        --out packages/delta/benchmarks/results/evoformer-cpu.json
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import torch

from delta.evoformer import EvoformerConfig
from delta.sweep import FORMS, evoformer_sweep
from effcore.device import cpu_model, device_spec
from effcore.io import write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", default="16,32,48,64")
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--delta-fraction", type=float, default=0.5)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    cfg = EvoformerConfig()
    t0 = time.perf_counter()
    rows = evoformer_sweep([int(n) for n in args.lengths.split(",")], args.forms.split(","), cfg=cfg,
                           chunk=args.chunk, delta_fraction=args.delta_fraction,
                           bandwidth=device_spec("cpu").host_link_bandwidth,
                           progress=lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True))  # fmt: skip
    for row in rows:
        print(row, flush=True)
    write_json(args.out, {
        "command": "python packages/delta/benchmarks/bench_evoformer.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "config": {f: getattr(cfg, f) for f in cfg.__slots__},
        "machine": f"{cpu_model()} ({platform.machine()}), {torch.get_num_threads()} threads, shared with other jobs",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "wall_s": time.perf_counter() - t0, "rows": [r.to_dict() for r in rows],
    })  # fmt: skip


if __name__ == "__main__":
    main()
