"""MNIST accuracy of LeNet variants (full or half spectrum, CNN twin, CEMNet, ...) over seeds, one file.

    uv run python packages/tfdmnet/benchmarks/bench_mnist.py --variants tfdmnet-full,tfdmnet-half \\
        --seeds 0,1,2 --threads 1 --runs-dir /tmp/tfdmnet-mnist \\
        --out packages/tfdmnet/benchmarks/results/mnist_spectrum.json

Every run uses the ``mnist-cpu`` recipe (``--epochs`` and ``--holdout`` change it for all runs) and is
the same training as ``tfdmnet train -m PRESET --spectrum ... --seed S``. Runs go in ``--runs-dir``
(one folder each; an interrupted sweep resumes where it stopped). The output JSON is rewritten after
every run: the machine, the command line, and per run the final epoch's accuracy (never the best
epoch), the per-epoch history, the wall time, parameters and inference MACs. ``finished`` says how
many of the planned runs it holds. ``--summary FILE...`` prints the README's table from such files
(per variant: the accuracy of each seed, mean and sample sd, train accuracy, time, parameters, MACs).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

VARIANTS: dict[str, tuple[str, dict[str, str]]] = {
    # name: (preset, EMLOptions overrides)
    "lenet-cnn": ("lenet-cnn", {}),
    "tfdmnet-full": ("lenet-tfdmnet", {"spectrum": "full"}),
    "tfdmnet-half": ("lenet-tfdmnet", {"spectrum": "half"}),
    "srelu-full": ("lenet-tfdmnet", {"spectrum": "full", "nonlinearity": "spatial_relu"}),
    "srelu-half": ("lenet-tfdmnet", {"spectrum": "half", "nonlinearity": "spatial_relu"}),
    "exact-full": ("lenet-tfdmnet", {"spectrum": "full", "dropout_mode": "exact"}),
    "exact-half": ("lenet-tfdmnet", {"spectrum": "half", "dropout_mode": "exact"}),
    "cemnet-full": ("lenet-cemnet", {"spectrum": "full"}),
    "cemnet-half": ("lenet-cemnet", {"spectrum": "half"}),
}


def _printer(label: str):
    def on_event(kind: str, **info) -> None:
        if kind == "epoch_end":
            split = "val" if "val_accuracy" in info else "test"
            print(f"{label} epoch {info['epoch']}: {split} {info[f'{split}_accuracy']:.4f} ({info['seconds']:.0f} s)",
                  flush=True)  # fmt: skip

    return on_event


def summary(paths: list[Path]) -> str:
    """A markdown table of the runs in ``paths``, one row per variant, in the order they appear."""
    by: dict[str, list[dict]] = {}
    for path in paths:
        for run in json.loads(path.read_text())["runs"]:
            by.setdefault(run["variant"], []).append(run)
    lines = [
        "| variant | spectrum | accuracy by seed | mean ± sd | train acc. | train time | parameters | MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, runs in by.items():
        runs.sort(key=lambda r: r["seed"])
        acc = [100 * r["accuracy"] for r in runs]
        seeds = " / ".join(f"{a:.2f}" for a in acc) + f" % (seed{'s' if len(runs) > 1 else ''} "
        seeds += ", ".join(str(r["seed"]) for r in runs) + ")"
        spread = f"{statistics.mean(acc):.3f} ± {statistics.stdev(acc):.3f} %" if len(acc) > 1 else ""
        train_acc = " / ".join(f"{100 * r['train_accuracy']:.2f}" for r in runs) + " %"
        secs = [r["train_seconds"] for r in runs]
        time_s = f"{min(secs):.0f}-{max(secs):.0f} s" if len(secs) > 1 else f"{secs[0]:.0f} s"
        spectrum = runs[0]["eml"]["spectrum"] if runs[0]["eml"] else "(no EML)"
        lines.append(f"| {variant} | {spectrum} | {seeds} | {spread} | {train_acc} | {time_s} | "
                     f"{runs[0]['parameters']:,} | {runs[0]['inference_macs'] / 1e6:.2f} M |")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--summary", type=Path, nargs="+", help="print the table of these result files and exit")
    ap.add_argument("--variants", help=f"comma-separated, of: {', '.join(VARIANTS)}")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help="default: the recipe's (20)")
    ap.add_argument("--holdout", type=int, default=0, help="evaluate on N held-out training images")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--runs-dir", type=Path)
    ap.add_argument("--out", type=Path, help="the results file (.json)")
    args = ap.parse_args()
    if args.summary:
        print(summary(args.summary))
        return
    if not (args.variants and args.runs_dir and args.out):
        ap.error("--variants, --runs-dir and --out are needed to run (or --summary FILE... to print a table)")

    import torch

    from effcore.errors import ConfigError
    from effcore.io import check_writable, write_json
    from effcore.provenance import run_meta
    from tfdmnet.data import load_dataset
    from tfdmnet.models import build_model, get_preset
    from tfdmnet.ops import network_table
    from tfdmnet.train import get_recipe, train

    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    check_writable(args.out, suffixes=(".json",))
    torch.set_num_threads(args.threads)
    recipe = get_recipe("mnist-cpu").replace(epochs=args.epochs, holdout=args.holdout)
    train_set = load_dataset("mnist", "train", data_dir=args.data_dir)
    test_set = None if args.holdout else load_dataset("mnist", "test", data_dir=args.data_dir)

    plan = [(v, s) for s in seeds for v in variants]
    meta = {
        **run_meta(device="cpu"),
        "recipe": recipe.to_dict(),
        "planned": len(plan),
    }
    runs = []
    for variant, seed in plan:
        preset, overrides = VARIANTS[variant]
        cfg = get_preset(preset)
        if overrides:
            cfg = dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, **overrides))
        r = recipe.replace(seed=seed)
        run_dir = args.runs_dir / f"{variant}-{seed}"
        t0 = time.perf_counter()
        try:
            metrics = train(cfg, r, run_dir, on_event=_printer(f"{variant} seed {seed}"), train_set=train_set,
                            test_set=test_set)  # fmt: skip
        except ConfigError as err:
            raise SystemExit(f"error: {err}") from None
        split = metrics["eval_split"]
        runs.append({
            "variant": variant, "preset": preset, "eml": dataclasses.asdict(cfg.eml) if cfg.has_eml else None,
            "seed": seed, "epochs": metrics["epochs"], "eval_split": split,
            "accuracy": metrics[f"{split}_accuracy"], "train_accuracy": metrics["history"][-1]["train_accuracy"],
            "train_seconds": metrics["train_seconds"], "wall_seconds": time.perf_counter() - t0,
            "parameters": metrics["parameters"],
            "inference_macs": network_table(build_model(cfg))[-1]["measured_macs"],
            "history": metrics["history"],
        })  # fmt: skip
        write_json(args.out, {"meta": {**meta, "finished": len(runs)}, "runs": runs})
        print(f"{variant} seed {seed}: {split} accuracy {runs[-1]['accuracy']:.4f}", flush=True)


if __name__ == "__main__":
    main()
