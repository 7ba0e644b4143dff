"""EML layer against conv2d and a plain torch.fft convolution, forward and fwd+bwd, over a size sweep.

    uv run python packages/tfdmnet/benchmarks/bench_eml.py --sizes 8,16,32,64 --kernels 3,5,7 \\
        --channels 64 --batch 32 --repeat 10 --out bench-eml.json

The peer is ``torch.nn.functional.conv2d`` (oneDNN on CPU, cuDNN on GPU) with ``padding=k//2``; the
second peer is an FFT convolution written the plain way (rfft2 of input and padded kernel, an einsum
over non-contiguous spectra, irfft2). Methods alternate inside every repeat; the table shows median and
IQR per method and ``vs_conv2d`` = median conv2d time / median method time (> 1: faster than conv2d).
See ``tfdmnet.bench`` for what each method includes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from effcore.io import write_json
from effcore.provenance import run_meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="8,16,32,64", help="feature-map sizes H = W")
    ap.add_argument("--kernels", default="3,5,7")
    ap.add_argument("--channels", default="64", help="channels in = out")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--backend", default="auto", help="EML mixing: auto (Triton on CUDA), triton, torch")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from rich.console import Console

    from effcore.cli import render_table
    from effcore.device import infer_device
    from tfdmnet.bench import bench_layers

    if args.threads:
        torch.set_num_threads(args.threads)
    device = infer_device(args.device)
    ints = lambda s: [int(v) for v in s.split(",")]  # noqa: E731
    cases = [(args.batch, c, hw, k) for c in ints(args.channels) for hw in ints(args.sizes)
             for k in ints(args.kernels) if k <= hw]  # fmt: skip
    rows = bench_layers(cases, repeat=args.repeat, device=device, backend=args.backend)
    console = Console()
    console.print(render_table(f"EML vs conv2d on {device} ({torch.get_num_threads()} threads)", rows))
    summary = [r for r in rows if r["method"] != "conv2d"]
    wins = [r for r in summary if r["vs_conv2d"] > 1]
    console.print(f"{len(wins)} of {len(summary)} (case, mode, method) rows are faster than conv2d")
    if args.out:
        write_json(args.out, {"meta": run_meta(device=device), "rows": rows})


if __name__ == "__main__":
    main()
