"""Every mixture preset against its CNN twin: inference and training step per batch, as ratios in one run.

    uv run python packages/tfdmnet/benchmarks/bench_networks.py --threads 1 --rounds 7 \\
        --out packages/tfdmnet/benchmarks/results/networks_cpu.json

Cases (``--cases``, comma-separated ``preset:width:batch``): LeNet on 28x28 at batch 256, VGG16 at a
quarter width on 32x32 at batch 64, AlexNet at a quarter width on 224x224 at batch 16 (random input;
no ImageNet here). See ``tfdmnet.netbench`` for what is timed. The JSON holds per-call ms (wall and
CPU), the per-round ratios' median and quartiles, MACs per image, and the load average before/after.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from effcore.io import write_json
from effcore.provenance import run_meta

DEFAULT = "lenet-tfdmnet:1:256,vgg16-mixture:0.25:64,alexnet-mixture:0.25:16"


def _write(out: Path, args: argparse.Namespace, load_before: tuple, results: list, total: int) -> None:
    # Rewritten after every case, so a long run stopped part-way keeps the cases it finished.
    meta = {**run_meta(device="cpu"), "loadavg_before": load_before, "rounds": args.rounds,
            "warmup": args.warmup, "cases_requested": args.cases, "cases_done": f"{len(results)} of {total}"}  # fmt: skip
    write_json(out, {"meta": meta, "results": results})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=DEFAULT, help="preset:width:batch, comma-separated")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from effcore.errors import ConfigError
    from effcore.io import check_writable
    from tfdmnet.netbench import NetCase, compare_network

    check_writable(args.out, suffixes=(".json",), flag="--out")
    try:
        cases = [NetCase(preset=p, width=float(w), batch=int(b))
                 for p, w, b in (c.split(":") for c in args.cases.split(","))]  # fmt: skip
    except ValueError:
        raise SystemExit(f"--cases {args.cases!r}: each case is preset:width:batch") from None
    except ConfigError as err:
        raise SystemExit(f"--cases: {err}") from None
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for case in cases:
        res = compare_network(case, rounds=args.rounds, warmup=args.warmup)
        results.append(res)
        for mode, m in res["modes"].items():
            line = ", ".join(
                f"{v} {m['ms'][v]['wall']['median']:.1f} ms (x{m['vs_twin'][v]['wall']['median']:.2f} wall, "
                f"x{m['vs_twin'][v]['cpu']['median']:.2f} cpu)"
                for v in ("fused", "reference")
            )
            print(f"{case.preset} w{case.width} b{case.batch} {mode}: twin {m['ms']['twin']['wall']['median']:.1f} ms;"
                  f" {line}; MACs x{res['macs_ratio']}", flush=True)  # fmt: skip
        for mode, why in res.get("not_run", {}).items():
            print(f"{case.preset} w{case.width} b{case.batch} {mode}: not run ({why})", flush=True)
        _write(args.out, args, load_before, results, len(cases))


if __name__ == "__main__":
    main()
