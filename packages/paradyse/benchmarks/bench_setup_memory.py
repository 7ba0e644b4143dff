"""Setup memory of one rank with per-shard initialisation against building the whole model, side by side.

    uv run python packages/paradyse/benchmarks/bench_setup_memory.py \\
        --out packages/paradyse/results/setup_memory.json

Each point runs in a fresh process: it joins a ``fake`` process group (one process standing for rank 0
of ``p``; setting up the blocks communicates nothing), resets the kernel's peak-RSS mark, builds
``ParallelTransformer`` and reports the peak RSS increase (``VmHWM``) against the prediction, the
bytes of its parameter shards (``sum(shard numel) x dtype bytes``). ``p = 1`` is the whole model in
one process: what a rank would hold if it built the full model and then sharded it. Points whose
whole model would not fit this machine are predicted only (``measured`` null).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

POINTS = [("paper-1b", 1), ("paper-1b", 4), ("paper-1b", 16), ("paper-7b", 8), ("paper-7b", 32)]
PREDICT_ONLY = [("paper-7b", 1)]  # 13 GB of bf16 weights: more than this 24 GiB machine spares


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _point(model: str, p: int) -> dict:
    import torch
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from paradyse.config import get_model
    from paradyse.model import ParallelTransformer

    cfg = get_model(model)
    dist.init_process_group("fake", rank=0, world_size=p, store=FakeStore())
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _rss("VmRSS")
    net = ParallelTransformer(cfg)
    measured = _rss("VmHWM") - before
    params = sum(t.numel() * t.element_size() for t in net.parameters())
    dist.destroy_process_group()
    return {"model": model, "p": p, "measured_bytes": measured, "predicted_bytes": params,
            "ratio": measured / params, "torch": torch.__version__}  # fmt: skip


def _predicted(model: str, p: int) -> int:
    from paradyse.config import get_model
    from paradyse.weights import WEIGHT_NAMES, shard_shape

    cfg = get_model(model)
    per_layer = 0
    for name in WEIGHT_NAMES:
        n = 1
        for dim in shard_shape(cfg, name, p):
            n *= dim
        per_layer += n
    return per_layer * cfg.layers * cfg.dtype_bytes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--point", nargs=2, metavar=("MODEL", "P"), help=argparse.SUPPRESS)  # one child process
    args = ap.parse_args()
    if args.point:
        print(json.dumps(_point(args.point[0], int(args.point[1]))))
        return

    from rich.console import Console

    from effcore.cli import render_table
    from effcore.device import cpu_model
    from effcore.io import check_writable

    if args.out is not None:
        check_writable(args.out, suffixes=(".json",))
    rows = []
    for model, p in POINTS:
        res = subprocess.run([sys.executable, __file__, "--point", model, str(p)], capture_output=True, text=True,
                             check=True)  # fmt: skip
        row = json.loads(res.stdout.strip().splitlines()[-1])
        assert row["predicted_bytes"] == _predicted(model, p)
        rows.append(row)
    rows += [{"model": m, "p": p, "measured_bytes": None, "predicted_bytes": _predicted(m, p), "ratio": None}
             for m, p in PREDICT_ONLY]  # fmt: skip
    for row in rows:
        full = next(r["predicted_bytes"] for r in rows if r["model"] == row["model"] and r["p"] == 1)
        row["share_of_full_model"] = row["predicted_bytes"] / full
    table = [{"model": r["model"], "p": r["p"], "predicted_MiB": r["predicted_bytes"] / 2**20,
              "measured_MiB": None if r["measured_bytes"] is None else r["measured_bytes"] / 2**20,
              "measured/predicted": r["ratio"], "share_of_full": r["share_of_full_model"]} for r in rows]  # fmt: skip
    Console().print(
        render_table("setup memory of rank 0 (peak RSS increase while building the blocks)", table)
    )
    if args.out:
        args.out.write_text(json.dumps({"machine": cpu_model(), "points": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
