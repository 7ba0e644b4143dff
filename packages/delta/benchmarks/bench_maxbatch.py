"""Largest batch under a fixed budget and time per sample there, for every method side by side.

    uv run python packages/delta/benchmarks/bench_maxbatch.py --model resnet50 --image-size 64 \\
        --budget 288MiB --batches 4,8,12,16,32,64,96,128 --out packages/delta/benchmarks/results/maxbatch-resnet50-64px.json

One profiled step per batch size serves every delta policy (the trace does not depend on the policy);
each method is then timed at its own largest batch (one untimed step, one timed), and all methods at a
common batch where the budget binds (interleaved rounds; the time overhead against nothing released).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from delta.bench import run_maxbatch
from delta.models import DATA, build_model
from effcore.cli import parse_bytes
from effcore.device import device_spec, infer_device
from effcore.io import write_json
from effcore.provenance import run_meta

METHODS = "none,checkpoint,offload,dtr,capuchin,delta,torch-checkpoint,torch-save-on-cpu"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--image-size", type=int, default=None, help="ResNets: input side (default 224)")
    ap.add_argument("--data", default=None, help="ResNets: synthetic (default) or cifar10")
    ap.add_argument("--seq-len", type=int, default=None, help="smollm2: tokens per sequence (default 128)")
    ap.add_argument("--budget", default="4GiB")
    ap.add_argument("--batches", default="4,8,16,32,64")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds at the common batch")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = infer_device(args.device)
    budget = parse_bytes(args.budget, flag="--budget")
    case = build_model(
        args.model, image_size=args.image_size, data=args.data, seq_len=args.seq_len, device=dev
    )
    spec = device_spec(dev)
    t0 = time.perf_counter()
    rows = run_maxbatch(case, budget, [int(b) for b in args.batches.split(",")], methods=args.methods.split(","),
                        rounds=args.rounds, bandwidth=spec.host_link_bandwidth, device=dev,
                        progress=lambda msg: print(f"[{time.perf_counter() - t0:7.1f} s] {msg}", flush=True))  # fmt: skip
    table = [r.to_dict() for r in rows]
    base = next(r for r in rows if r.method == "none")
    for row in table:
        if base.max_batch and row["max_batch"] and row["seconds_per_sample"]:
            row["batch_x"] = row["max_batch"] / base.max_batch
            row["time_x"] = row["seconds_per_sample"] / base.seconds_per_sample
        if base.common_seconds_per_sample and row["common_seconds_per_sample"]:
            row["overhead_x"] = row["common_seconds_per_sample"] / base.common_seconds_per_sample
            row["cpu_overhead_x"] = row["common_cpu_seconds_per_sample"] / base.common_cpu_seconds_per_sample
        print(row, flush=True)
    write_json(args.out, {
        **run_meta(started=t0, device=dev),
        "model": args.model, "image_size": args.image_size, "data": args.data or DATA[args.model][0],
        "seq_len": args.seq_len, "unit": case.unit, "budget": budget,
        "host_link_bandwidth": spec.host_link_bandwidth, "rows": table,
    })  # fmt: skip


if __name__ == "__main__":
    main()
