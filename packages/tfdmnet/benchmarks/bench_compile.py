"""Does ``torch.compile`` speed a TFDMNet up on CPU? Eager and compiled alternate in one run.

    uv run python packages/tfdmnet/benchmarks/bench_compile.py --threads 1 \\
        --out packages/tfdmnet/benchmarks/results/compile_cpu.json

``lenet-tfdmnet`` (fused tail, full spectrum) at batch 256: inference (eval, ``no_grad``) and a
training step (forward, cross-entropy, backward), eager against ``torch.compile(model)`` (inductor,
default mode). Records the first compiled call (the compile time) and, per round, the ratio eager
time / compiled time (above 1: compiling helps).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from effcore.io import write_json
from effcore.provenance import run_meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from effcore.io import check_writable
    from tfdmnet.bench import quartiles
    from tfdmnet.models import build_model

    check_writable(args.out, suffixes=(".json",), flag="--out")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("lenet-tfdmnet")
    compiled = torch.compile(model)
    x = torch.randn(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    def infer(m) -> None:
        with torch.no_grad():
            m(x)

    def step(m) -> None:
        m.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), y).backward()

    results = {}
    for mode, fn, train in (("inference", infer, False), ("train", step, True)):
        model.train(train)
        t0 = time.perf_counter()
        fn(compiled)
        first = time.perf_counter() - t0
        fn(model)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for r in range(args.rounds):
            for name in ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager"):
                t0 = time.perf_counter()
                fn(model if name == "eager" else compiled)
                times[name].append((time.perf_counter() - t0) * 1e3)
        ratios = [e / c for e, c in zip(times["eager"], times["compiled"], strict=True)]
        results[mode] = {"first_compiled_call_s": round(first, 2),
                         "ms_median": {k: round(quartiles(v)[1], 2) for k, v in times.items()},
                         "eager_over_compiled": [round(v, 3) for v in quartiles(ratios)]}  # fmt: skip
        print(mode, results[mode], flush=True)
    meta = {**run_meta(device="cpu"), "batch": args.batch, "rounds": args.rounds}
    write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
