"""The channel-mixing kernel alone: Triton (CUDA) against the torch paths, forward and fwd+bwd.

    uv run python packages/tfdmnet/benchmarks/bench_freq_mix.py --repeat 20 --out bench-mix.json

Shapes are the EMLs of the presets (VGG16-mixture conv8-10 and conv11-13 at batch 128, AlexNet-mixture
conv2 and conv3 at batch 64, LeNet conv2 at batch 128). Peers: ``freq_mix_torch`` (one contiguous
complex bmm, our CPU path) and ``freq_mix_reference`` (the plain einsum). Without CUDA the Triton path
would run in the interpreter, which is a correctness tool, not a speed: it is left out and the two
torch paths are compared. Every output is checked against the reference before timing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SHAPES = {  # name: (N, C, O, H, W) of the spatial map; the spectrum is H x (W//2 + 1)
    "vgg16 conv8-10": (128, 512, 512, 4, 4),
    "vgg16 conv11-13": (128, 512, 512, 2, 2),
    "alexnet conv2": (64, 96, 256, 27, 27),
    "alexnet conv3": (64, 256, 384, 13, 13),
    "lenet conv2": (128, 6, 16, 14, 14),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console

    from effcore.cli import render_table
    from effcore.device import infer_device
    from effcore.testing.tolerances import assert_close
    from tfdmnet.bench import quartiles
    from tfdmnet.kernels import freq_mix_reference, freq_mix_torch, freq_mix_triton
    from tfdmnet.kernels.mixing import triton_available

    device = infer_device(args.device)
    methods = {"torch_bmm": freq_mix_torch, "einsum": freq_mix_reference}
    if device.type == "cuda" and triton_available():
        methods = {"triton": freq_mix_triton, **methods}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    rows = []
    for name, (n, c, o, h, w) in SHAPES.items():
        wf = w // 2 + 1
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, c, h, wf, 2, generator=g).to(device)
        wt = torch.randn(o, c, h, wf, 2, generator=g).to(device)
        x, wt = torch.view_as_complex(x).requires_grad_(True), torch.view_as_complex(wt).requires_grad_(True)
        ref = freq_mix_reference(x, wt)
        for m, fn in methods.items():
            assert_close(fn(x, wt), ref, label=f"{m} on {name}", scale=c**0.5)
        for mode in ("fwd", "fwd+bwd"):
            times = {m: [] for m in methods}
            for rep in range(args.repeat + 2):
                for m, fn in methods.items():
                    sync()
                    t0 = time.perf_counter()
                    if mode == "fwd":
                        with torch.no_grad():
                            fn(x, wt)
                    else:
                        fn(x, wt).real.sum().backward()
                        x.grad = wt.grad = None
                    sync()
                    if rep >= 2:  # two warm-up rounds (compilation, caches)
                        times[m].append(time.perf_counter() - t0)
            base = statistics.median(times["einsum"])
            for m in methods:
                q1, med, q3 = quartiles(times[m])
                rows.append({"shape": name, "mode": mode, "method": m, "median_ms": med * 1e3,
                             "iqr_ms": (q3 - q1) * 1e3, "vs_einsum": base / med})  # fmt: skip
    Console().print(render_table(f"complex channel mixing on {device}", rows))
    if args.out:
        args.out.write_text(json.dumps({"device": str(device), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
