"""Predicted speedup of Merak over a Megatron-DeepSpeed-style baseline on 64 GPUs, the paper's four GPT sizes.

    nice uv run python packages/merak/benchmarks/bench_simulate.py --device A100 \\
        --out packages/merak/benchmarks/results/simulate-A100.json

Each size is built on the meta device and captured (tens of seconds each, minutes in all), its
shard costs predicted on ``--device`` (``merak.costs.predict_costs``), and one training step of
both systems simulated on the size's preset mesh (``merak.presets``; the paper's meshes, batch
sizes and cluster are not known: see that module). The ablation re-runs Merak with one technique
at a time set back to the baseline's (schedule 1F1B, parameter partition, full recomputation, no
TP overlap) and reports the speedup that remains. ``--plots DIR`` draws each step's Gantt chart.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from effcore.io import check_writable, write_json
from effcore.provenance import run_meta
from merak.gantt import gantt
from merak.presets import PAPER_SIZES, capture_size, cluster, predict_speedup, run_merak, run_system


def _ablation(size, captured, cl) -> dict[str, dict]:
    shards, costs = captured
    variants = {
        "merak, 1f1b schedule": run_merak(size, shards, costs, cl, kind="1f1b"),
        "merak, parameter partition": run_merak(size, shards, costs, cl, method="parameters"),
        "merak, no TP overlap": run_merak(size, shards, costs, cl, overlap=False),
        "merak, full recompute": run_system(
            size,
            shards,
            costs,
            cl,
            system="merak",
            kind="shifted-critical-path",
            method="time",
            ratios=[1.0] * size.pp,
            overlap=True,
        ),
    }
    return {
        name: {"step_s": run.result.step_s, "fits": run.fits, "ratios": list(run.ratios)}
        for name, run in variants.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="write the raw results here (.json)")
    parser.add_argument("--device", default="A100", help="accelerator datasheet: V100, A100, H100, H200")
    parser.add_argument("--sizes", default=",".join(PAPER_SIZES), help="comma-separated subset of the sizes")
    parser.add_argument("--plots", type=Path, help="folder for Gantt charts of every simulated step")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    if args.out is not None:
        check_writable(args.out, suffixes=(".json",))
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in PAPER_SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {', '.join(PAPER_SIZES)}")
    cl = cluster(args.device)
    console = Console(width=None if sys.stdout.isatty() else 150)  # a log file gets the whole table
    rows = []
    for name in sizes:
        size = PAPER_SIZES[name]()
        t0 = time.perf_counter()
        console.print(f"capturing {name} ({size.layers} x {size.hidden}) on the meta device ...")
        captured = capture_size(size, cl.spec)
        capture_s = time.perf_counter() - t0
        result = predict_speedup(size, cl, captured=captured)
        row = {**result.to_dict(), "capture_s": capture_s, "ablation": _ablation(size, captured, cl)}
        for variant in row["ablation"].values():
            variant["speedup"] = result.baseline.result.step_s / variant["step_s"]
        rows.append(row)
        if args.plots is not None:
            for run in (result.baseline, result.merak):
                gantt(
                    run.result,
                    args.plots / f"{name}-{run.system}.png",
                    title=f"{name} {run.system} ({run.kind}): step {run.result.step_s:.3f} s",
                )

    table = Table(title=f"Merak vs Megatron-DeepSpeed style, predicted on 64 x {cl.spec.name}")
    for col in (
        "size",
        "mesh dp,tp,pp",
        "M x b",
        "baseline step s",
        "merak step s",
        "merak r0",
        "fits b/m",
        "predicted",
        "paper",
    ):
        table.add_column(col, justify="right")
    for row in rows:
        s = row["size"]
        base, merak = row["baseline"], row["merak"]
        table.add_row(
            s["name"],
            f"{s['dp']},{s['tp']},{s['pp']}",
            f"{s['microbatches']} x {s['micro_batch']}",
            f"{base['result']['step_s']:.3f}",
            f"{merak['result']['step_s']:.3f}",
            f"{merak['recompute_ratios'][0]:.1f}",
            f"{'y' if base['fits'] else 'n'}/{'y' if merak['fits'] else 'n'}",
            f"{row['speedup']:.2f}x",
            f"{row['paper_speedup']:.2f}x",
        )
    console.print(table)
    ablation = Table(title="speedup left when Merak gives up one technique")
    ablation.add_column("size", justify="right")
    names = list(rows[0]["ablation"]) if rows else []
    for name in names:
        ablation.add_column(name.removeprefix("merak, "), justify="right")
    for row in rows:
        ablation.add_row(row["size"]["name"], *(f"{row['ablation'][n]['speedup']:.2f}x" for n in names))
    console.print(ablation)
    if args.out is not None:
        payload = {
            **run_meta(started=started, command=None if argv is None else [__file__, *argv]),
            "device": cl.spec.name,
            "cluster": cl.to_dict(),
            "sizes": rows,
        }
        write_json(args.out, payload)
        console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
