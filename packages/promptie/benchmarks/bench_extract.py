"""Full-schema extraction speed on CPU: promptie's path (the text's prefix encoded once, its KV cache shared
by every type prompt, prompts batched) against one generation per type prompt from scratch, without prefix
reuse or batching. Both sides run on the same sentences, alternating sentence by sentence, in one process;
outputs must agree. Each side is timed by the wall clock and by the process's CPU time.

    uv run python packages/promptie/benchmarks/bench_extract.py --schema casie --data casie -n 2 --repeats 2 \
        --max-new-tokens 16 --out packages/promptie/benchmarks/results/extract-casie-smollm2.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from effcore.io import write_json
from promptie.backbone import load_backbone
from promptie.data import load_dataset, subsample
from promptie.extractor import ExtractConfig, Extractor
from promptie.runs import git_commit
from promptie.schema import load_schema
from promptie.train import load_extractor


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, help="a trained run (default: the untrained --model)")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--schema", default="casie")
    ap.add_argument("--data", default="casie")
    ap.add_argument("--mode", default="composable")
    ap.add_argument("-n", type=int, default=8, help="test sentences")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    commit = git_commit()  # the code this process imports
    torch.set_num_threads(args.threads)
    cfg = {"mode": args.mode, "max_new_tokens": args.max_new_tokens}
    if args.checkpoint:
        ours = load_extractor(args.checkpoint, device="cpu", overrides=cfg)
        bb, schema = ours.backbone, ours.schema
    else:
        bb, schema = load_backbone(args.model, device="cpu"), load_schema(args.schema)
        ours = Extractor(bb, schema, ExtractConfig(**cfg))
    ours.judge = None  # generation only: relations are judged the same way on both sides
    ref = Extractor(bb, schema, ExtractConfig(**cfg, shared_prefix=False))
    docs = subsample(load_dataset(args.data, "test"), limit=args.n, seed=0)
    texts = [d.text for d in docs]
    ours.extract(texts[0])  # warm-up (allocations, first-call overheads) on both sides
    ref.extract(texts[0])
    # Both paths alternate sentence by sentence, so a change in the machine's load hits both alike; each
    # is timed by the wall clock and by this process's CPU time (all its threads), which a loaded
    # machine inflates far less than the wall clock.
    times: dict[str, list[float]] = {"ours": [], "per_type_no_reuse": []}
    cpu: dict[str, list[float]] = {"ours": [], "per_type_no_reuse": []}
    agree = True
    for _ in range(args.repeats):
        spent = {k: [0.0, 0.0] for k in times}
        for text in texts:
            outs = {}
            for name, ex in (("ours", ours), ("per_type_no_reuse", ref)):
                t0, c0 = time.perf_counter(), time.process_time()
                outs[name] = ex.extract(text)
                spent[name][0] += time.perf_counter() - t0
                spent[name][1] += time.process_time() - c0
            a, b = outs["ours"], outs["per_type_no_reuse"]
            agree &= (a.entities, a.events) == (b.entities, b.events)
        for name, (wall, cpu_s) in spent.items():
            times[name].append(wall)
            cpu[name].append(cpu_s)
    sps = {k: [len(texts) / t for t in v] for k, v in times.items()}
    ratios = [b / a for a, b in zip(times["ours"], times["per_type_no_reuse"], strict=True)]
    cpu_ratios = [b / a for a, b in zip(cpu["ours"], cpu["per_type_no_reuse"], strict=True)]
    result = {
        "command": " ".join(["python", *sys.argv]),
        "git_commit": commit,
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "model": bb.name,
        "checkpoint": str(args.checkpoint) if args.checkpoint else None,
        "schema": schema.name,
        "prompts_per_sentence": len(ours.prompts),
        "sentences": len(texts),
        "repeats": args.repeats,
        "threads": args.threads,
        "sentences_per_second": {
            k: {"median": statistics.median(v), "min": min(v), "max": max(v)} for k, v in sps.items()
        },
        "speedup": {
            "median": statistics.median(ratios),
            "min": min(ratios),
            "max": max(ratios),
            "all": ratios,
        },
        "cpu_seconds": {k: v for k, v in cpu.items()},
        "speedup_cpu_time": {
            "median": statistics.median(cpu_ratios),
            "min": min(cpu_ratios),
            "max": max(cpu_ratios),
            "all": cpu_ratios,
        },
        "outputs_identical": agree,
    }
    print(f"{schema.name}: {len(ours.prompts)} prompts per sentence, {len(texts)} sentences x {args.repeats}")
    for k, v in result["sentences_per_second"].items():
        print(f"  {k:>18}: {v['median']:.3f} sentences/s (min {v['min']:.3f}, max {v['max']:.3f})")
    print(f"  speed-up: median {result['speedup']['median']:.2f}x (min {min(ratios):.2f}, max {max(ratios):.2f}); "
          f"outputs identical: {agree}")  # fmt: skip
    print(
        f"  speed-up in CPU time: median {result['speedup_cpu_time']['median']:.2f}x "
        f"(min {min(cpu_ratios):.2f}, max {max(cpu_ratios):.2f})"
    )
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    main()
