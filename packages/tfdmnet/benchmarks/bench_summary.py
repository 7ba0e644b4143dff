"""The README's speed table from a ``tfdmnet bench --out FILE.json`` result file.

    uv run python packages/tfdmnet/benchmarks/bench_summary.py packages/tfdmnet/benchmarks/results/bench_64ch.json

One row per (channels, size, kernel): ``conv2d`` time / method time for each mode and method, from the
fastest of the repeated calls (``vs_conv2d_fastest``; ``--median`` uses the medians instead), then the
range of the plain FFT convolution's time over the standalone EML's, per mode.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

METHODS = (("eml", "standalone"), ("eml_in_domain", "in-domain"), ("fft_conv", "plain FFT conv"))
MODES = ("fwd", "fwd+bwd")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file", type=Path)
    ap.add_argument("--median", action="store_true", help="ratios of median times, not of fastest calls")
    args = ap.parse_args()
    payload = json.loads(args.file.read_text())
    rows = payload["rows"]
    ratio, time = ("vs_conv2d", "median_ms") if args.median else ("vs_conv2d_fastest", "fastest_ms")
    at = {(r["channels"], r["size"], r["kernel"], r["mode"], r["method"]): r for r in rows}
    cases = sorted({(r["channels"], r["size"], r["kernel"]) for r in rows})
    print(payload["meta"])
    print(
        "| channels | size | k | " + " | ".join(f"{m}: {label}" for m in MODES for _, label in METHODS) + " |"
    )
    print("|---" * (3 + len(MODES) * len(METHODS)) + "|")
    for c, s, k in cases:
        cells = [f"{at[(c, s, k, m, method)][ratio]:.2f}" for m in MODES for method, _ in METHODS]
        print(f"| {c} | {s}x{s} | {k} | " + " | ".join(cells) + " |")
    for m in MODES:
        gain = [at[(*case, m, "fft_conv")][time] / at[(*case, m, "eml")][time] for case in cases]
        print(f"{m}: plain FFT conv time / standalone EML time: {min(gain):.2f}-{max(gain):.2f}")


if __name__ == "__main__":
    main()
