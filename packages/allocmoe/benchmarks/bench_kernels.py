"""Expert computation time: allocmoe's fused_experts against transformers' grouped_mm_experts_forward, same run.

    uv run python packages/allocmoe/benchmarks/bench_kernels.py --tokens 512 --experts 16 --k 4 \\
        --hidden 576 --inter 128 --repeat 20 --out bench-kernels.json

The peer is ``transformers.integrations.moe.grouped_mm_experts_forward`` on a real ``Qwen2MoeExperts``
module (``_is_expert_parallel = True``: dropped slots are index ``num_experts`` with weight 0). Each
method runs at full K and with half the slots dropped (the same random half for every method); ours
marks dropped slots with -1. On CPU both torch paths are also timed alone at full K (one grouped_mm
call per GEMM, or one matmul per present expert: the fallback for dtypes without a grouped kernel). The Triton backend is timed when CUDA is present. All outputs are checked
against the HF output first. Repeats alternate the methods; medians, IQR and ratios are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def _timed(fn: Callable[[], torch.Tensor], sync: Callable[[], None]) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--k", type=int, default=4, help="slots per token (num_experts_per_tok)")
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--inter", type=int, default=128, help="expert intermediate size (moe_intermediate_size)")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda")
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per method (after 3 warm-up calls)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()

    from rich.console import Console
    from rich.table import Table
    from transformers import Qwen2MoeConfig
    from transformers.integrations.moe import grouped_mm_experts_forward
    from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeExperts

    from allocmoe.kernels.experts import _fused_experts_torch, fused_experts
    from effcore.device import infer_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = infer_device(args.device)
    dtype = getattr(torch, args.dtype)
    T, E, K, H, inter = args.tokens, args.experts, args.k, args.hidden, args.inter
    torch.manual_seed(args.seed)
    cfg = Qwen2MoeConfig(hidden_size=H, moe_intermediate_size=inter, num_experts=E, num_experts_per_tok=K)
    module = Qwen2MoeExperts(cfg)
    with torch.no_grad():
        module.gate_up_proj.normal_(0.0, H**-0.5)
        module.down_proj.normal_(0.0, inter**-0.5)
    module = module.to(device=device, dtype=dtype).eval()
    module._is_expert_parallel = True
    gate_up, down = module.gate_up_proj.detach(), module.down_proj.detach()

    x = torch.randn(T, H, device=device, dtype=dtype)
    weights, ids = torch.randn(T, E, device=device).softmax(-1).topk(K, dim=-1)
    weights = weights.to(dtype)
    dropped = torch.zeros(T * K, dtype=torch.bool, device=device)
    dropped[torch.randperm(T * K, device=device)[: T * K // 2]] = True
    dropped = dropped.view(T, K)
    ids_half = ids.masked_fill(dropped, -1)
    ids_half_hf = ids.masked_fill(dropped, E)
    weights_half_hf = weights.masked_fill(dropped, 0.0)

    methods: dict[str, Callable[[], torch.Tensor]] = {
        "hf grouped_mm, full K": lambda: grouped_mm_experts_forward(module, x, ids, weights),
        "hf grouped_mm, half dropped": lambda: grouped_mm_experts_forward(
            module, x, ids_half_hf, weights_half_hf
        ),
        "ours torch, full K": lambda: fused_experts(x, gate_up, down, ids, weights, backend="torch"),
        "ours torch, half dropped": lambda: fused_experts(
            x, gate_up, down, ids_half, weights, backend="torch"
        ),
    }
    if device.type == "cpu":  # "ours torch" runs grouped_mm; the per-expert loop is its dtype fallback
        methods["ours torch grouped_mm path, full K"] = lambda: _fused_experts_torch(
            x, gate_up, down, ids, weights, loop=False
        )
        methods["ours torch loop path, full K"] = lambda: _fused_experts_torch(
            x, gate_up, down, ids, weights, loop=True
        )
    if device.type == "cuda":
        methods["ours triton, full K"] = lambda: fused_experts(
            x, gate_up, down, ids, weights, backend="triton"
        )
        methods["ours triton, half dropped"] = lambda: fused_experts(
            x, gate_up, down, ids_half, weights, backend="triton"
        )
    peer = {
        name: "hf grouped_mm, full K" if "full" in name else "hf grouped_mm, half dropped" for name in methods
    }
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    times: dict[str, list[float]] = {name: [] for name in methods}
    errors: dict[str, float] = {}
    with torch.inference_mode():
        for name, fn in methods.items():
            ref = methods[peer[name]]().float()
            errors[name] = float((fn().float() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
            for _ in range(3):
                fn()
        for _ in range(args.repeat):
            for name, fn in methods.items():
                times[name].append(_timed(fn, sync))

    table = Table(title=f"experts forward: T={T} E={E} K={K} H={H} I={inter} {args.dtype} on {device}")
    for col in ("method", "median ms", "IQR ms", "min ms", "vs HF same drop", "vs HF full K", "max rel err"):
        table.add_column(col, justify="left" if col == "method" else "right")
    full = statistics.median(times["hf grouped_mm, full K"])
    rows = []
    for name, ts in times.items():
        q1, med, q3 = _quartiles(ts)
        row = {
            "method": name,
            "median_ms": med * 1e3,
            "iqr_ms": (q3 - q1) * 1e3,
            "min_ms": min(ts) * 1e3,
            "speedup_vs_hf_same_drop": statistics.median(times[peer[name]]) / med,
            "speedup_vs_hf_full": full / med,
            "max_relative_error_vs_hf": errors[name],
        }
        rows.append(row)
        table.add_row(
            name,
            f"{row['median_ms']:.2f}",
            f"{row['iqr_ms']:.2f}",
            f"{row['min_ms']:.2f}",
            f"{row['speedup_vs_hf_same_drop']:.2f}x",
            f"{row['speedup_vs_hf_full']:.2f}x",
            f"{errors[name]:.1e}",
        )
    Console(width=130).print(table)
    result = {
        "config": {**{k: v for k, v in vars(args).items() if k != "out"}, "device": str(device)},
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "results": rows,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
