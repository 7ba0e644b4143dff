"""GRASS against every baseline in one harness: same data order, step budget and schedule.

Each (method, seed) run writes ``OUT_DIR/<task>-<model>-<method>-s<seed>.json`` as ``grass train``
would (config, per-step rows, summary with memory by category, tokens/s, evaluation, machine, wall
time) plus the command line; runs already present are skipped, so a stopped campaign continues.
``--summary`` then writes one table over every run file found (median and spread over seeds).

    uv run python packages/grass/benchmarks/bench_methods.py --task gsm8k --steps 30 \\
        --methods grass,lisa,full --seeds 0 --out-dir packages/grass/results/gsm8k-smollm2
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

from effcore.io import write_json
from effcore.provenance import command_line
from grass.config import METHODS, RunConfig
from grass.train import run


def _row(data: dict) -> dict:
    s, mem = data["summary"], data["summary"]["memory"] or {}
    opt_device = s.get("optimizer_state_device_peak")
    return {
        "method": data.get("label", data["config"]["method"]),
        "seed": data["config"]["seed"],
        "eval_loss": s["eval"]["loss"],
        "accuracy": s["eval"]["accuracy"],
        "train_loss": s["final_loss"],
        "parameters_mib": mem.get("parameters", 0) / 2**20,
        "gradients_mib": mem.get("gradients", 0) / 2**20,
        # optimizer-state bytes on the device: LayerwiseAdamW's own peak count (resident + prefetched
        # units); for torch's AdamW (full, LoRA, DoRA) the unique storages it holds between steps
        # (older files: what it held after the measured step). Transient step buffers: peak_mib only.
        "optimizer_device_mib": (opt_device if opt_device is not None else mem.get("optimizer_state", 0))
        / 2**20,
        "optimizer_host_mib": s.get("optimizer_state_host", 0) / 2**20,
        "activations_mib": mem.get("activations", 0) / 2**20,
        "peak_mib": mem.get("peak", 0) / 2**20,
        "tokens_per_s": s["tokens_per_s"],
        "offload_share": s["offload_share"],
        "trainable_params": s["trainable_params"],
    }


def summarize(out_dir: Path) -> dict:
    """Median and spread (min-max) over seeds of every metric, per method, from the run files."""
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*-s*.json"))]
    rows = [_row(r) for r in runs]
    table = []
    for method in dict.fromkeys([*METHODS, *(r["method"] for r in rows)]):
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        entry: dict = {"method": method, "seeds": [r["seed"] for r in mine]}
        for key in mine[0]:
            if key in ("method", "seed"):
                continue
            values = [r[key] for r in mine if r[key] is not None]
            if values:
                entry[key] = statistics.median(values)
                entry[key + "_spread"] = max(values) - min(values)
        table.append(entry)
    return {"runs": rows, "table": table}


_COLUMNS = (
    ("eval_loss", "held-out loss", "{:.3f}"),
    ("accuracy", "exact match", "{:.3f}"),
    ("train_loss", "train loss (last 5)", "{:.3f}"),
    ("gradients_mib", "gradients MiB", "{:.0f}"),
    ("optimizer_device_mib", "optimizer on device MiB", "{:.0f}"),
    ("optimizer_host_mib", "optimizer on host MiB", "{:.0f}"),
    ("activations_mib", "activations MiB", "{:.0f}"),
    ("peak_mib", "peak MiB", "{:.0f}"),
    ("tokens_per_s", "tokens/s", "{:.1f}"),
    ("offload_share", "offload share", "{:.3f}"),
)


def markdown(summary: dict) -> str:
    """The summary table as Markdown (medians; spreads in brackets when there are several seeds)."""
    head = "| method | seeds | " + " | ".join(label for _, label, _ in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 2)]
    for row in summary["table"]:
        cells = []
        for key, _, fmt in _COLUMNS:
            if key not in row:
                cells.append("n/a")
                continue
            cell = fmt.format(row[key])
            if len(row["seeds"]) > 1:
                cell += f" (±{fmt.format(row[key + '_spread'] / 2)})"
            cells.append(cell)
        lines.append(f"| {row['method']} | {','.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="gsm8k")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=192)
    ap.add_argument("--lr", type=float, default=1e-4, help="for parameter updates")
    ap.add_argument("--adapter-lr", type=float, default=1e-3, help="for LoRA/DoRA")
    ap.add_argument("--gamma", type=int, default=2)
    ap.add_argument("--probe-steps", type=int, default=3)
    ap.add_argument("--period", type=int, default=6, help="T_s = T_u (and LISA's/BAdam's switching period)")
    ap.add_argument(
        "--embed-head",
        choices=["train", "freeze"],
        help="override the method's E/H handling (the run is labelled METHOD+eh or METHOD-eh)",
    )
    ap.add_argument("--eval-limit", type=int, default=48)
    ap.add_argument("--generate", type=int, default=16)
    ap.add_argument("--out-dir", type=Path, required=True)
    ap.add_argument("--summary", action="store_true", help="only (re)write OUT_DIR/summary.json")
    args = ap.parse_args(argv)
    if not args.summary:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                label = method + {None: "", "train": "+eh", "freeze": "-eh"}[args.embed_head]
                path = args.out_dir / f"{args.task}-{args.model}-{label}-s{seed}.json"
                if path.exists():
                    continue
                adapter = method in ("lora", "dora")
                cfg = RunConfig(
                    method=method, model=args.model, task=args.task, steps=args.steps, batch=args.batch,
                    seq_len=args.seq_len, lr=args.adapter_lr if adapter else args.lr, gamma=args.gamma,
                    probe_steps=args.probe_steps, sample_period=args.period, update_period=args.period,
                    warmup=max(1, args.steps // 10), seed=seed, embed_head=args.embed_head,
                )  # fmt: skip
                t0 = time.perf_counter()
                result = run(cfg, device="cpu", eval_limit=args.eval_limit, generate=args.generate)
                data = result.to_dict()
                data["command"] = command_line()
                data["label"] = label
                data["summary"]["campaign_wall_s"] = time.perf_counter() - t0
                write_json(path, data)
                print(json.dumps({"wrote": str(path), **_row(data)}), flush=True)
                del result
                gc.collect()
    summary = summarize(args.out_dir)
    write_json(args.out_dir / "summary.json", summary)
    if args.summary:
        print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
