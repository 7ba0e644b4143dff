"""Where the time goes, per block, in TFDMNet mixtures and their CNN twins (inference and a training step).

    uv run python packages/tfdmnet/benchmarks/bench_profile.py --threads 2 \\
        --out packages/tfdmnet/benchmarks/results/profile_blocks.json

Runs ``effcore.profiling.profile_modules`` through ``tfdmnet.profile.profile_network`` on random input:
``lenet-tfdmnet`` (batch 256) and ``vgg16-mixture --width 0.25`` (batch 64), the paper's layers on the
full spectrum with the fused EML-block tail (``fused``) and with the reference layers one by one
(``reference``), and the CNN twin of each. Rows are exclusive times (mean of the quieter half of the
repeats); ``totals`` adds them up per category (fft in / ifft out, pooling, complex BN, nonlinearity,
dropout, mixing, conv2d, ...). The machine's load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from effcore.io import write_json
from effcore.provenance import run_meta

CASES = (("lenet-tfdmnet", 1.0, 256), ("vgg16-mixture", 0.25, 64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from effcore.io import check_writable
    from tfdmnet.models import build_model
    from tfdmnet.profile import category_totals, profile_network

    check_writable(args.out, suffixes=(".json",), flag="--out")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    results = []
    for name, width, batch in CASES:
        torch.manual_seed(0)
        mixture = build_model(name, width=width)
        reference = build_model(mixture.cfg).set_fused(False)
        reference.load_state_dict(mixture.state_dict())
        variants = {"fused": mixture, "reference": reference, "twin": build_model(mixture.cfg.cnn_twin())}
        for variant, model in variants.items():
            cfg = model.cfg
            x = torch.randn(batch, cfg.in_channels, cfg.image_size, cfg.image_size)
            for mode in ("inference", "train"):
                rows = profile_network(
                    model, x, train=mode == "train", warmup=args.warmup, repeats=args.repeats
                )
                totals = category_totals(rows)
                step = sum(t["forward_ms"] + t["backward_ms"] for t in totals.values())
                print(f"{cfg.name:16s} {variant:9s} width {width} batch {batch} {mode:9s} {step:8.1f} ms: "
                      + ", ".join(f"{c} {t['share']:.0%}" for c, t in list(totals.items())[:5]))  # fmt: skip
                results.append({"model": cfg.name, "variant": variant, "width": width, "batch": batch, "mode": mode,
                                "spectrum": cfg.eml.spectrum if cfg.has_eml else None,
                                "step_ms": round(step, 3), "totals": totals, "rows": rows})  # fmt: skip
    meta = {**run_meta(device="cpu"), "loadavg_before": load_before, "warmup": args.warmup,
            "repeats": args.repeats}  # fmt: skip
    write_json(args.out, {"meta": meta, "results": results})


if __name__ == "__main__":
    main()
