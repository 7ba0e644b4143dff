"""Every strategy and every mix equals the single-process block stack, forward and backward, on gloo."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from effcore.testing.distributed import launch
from paradyse.attention import ring_attention
from paradyse.comm import from_zigzag, to_zigzag
from paradyse.config import ModelConfig
from paradyse.model import ParallelTransformer
from paradyse.reference import reference_forward, reference_weights
from paradyse.weights import SHARD_DIM, weight_names

pytestmark = pytest.mark.distributed

GQA = ModelConfig(name="gqa", hidden=64, heads=8, kv_heads=4, layers=2, ffn=128, attn_chunk=5)
MHA = ModelConfig(name="mha", hidden=32, heads=4, layers=2, ffn=64, causal=False)
FP64 = ModelConfig(
    name="fp64", hidden=32, heads=4, kv_heads=4, layers=2, ffn=64, dtype="float64", attn_chunk=3
)

ZIGZAG = ModelConfig(
    name="zigzag", hidden=64, heads=8, kv_heads=4, layers=2, ffn=128, attn_chunk=3, ring_layout="zigzag"
)

SWIGLU = ModelConfig(
    name="swiglu", hidden=64, heads=8, kv_heads=4, layers=2, ffn=96, attn_chunk=5, mlp="swiglu"
)

PLANS = {
    "gqa": [
        "megatron",
        "ulysses",
        "ring",
        "metp",
        ("megatron", "metp"),
        ("ring", "ulysses"),
        ("metp", "ring"),
    ],
    "mha": ["megatron", "ulysses", "ring", "metp", ("ulysses", "megatron")],
    "fp64": ["megatron", "ulysses", "ring", "metp"],
    "zigzag": ["ring", "metp", ("ring", "megatron")],
    "swiglu": ["megatron", "ulysses", "ring", "metp", ("metp", "megatron")],
}
CONFIGS = (("gqa", GQA), ("mha", MHA), ("fp64", FP64), ("zigzag", ZIGZAG), ("swiglu", SWIGLU))


def _errors(
    cfg: ModelConfig, plans, rank: int, p: int, batch: int = 2, per_rank: int = 8, device: str = "cpu"
) -> dict[str, dict]:
    s = per_rank * p
    dt = cfg.torch_dtype
    x = torch.randn(batch, s, cfg.hidden, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(
        dt
    )
    gy = torch.randn(
        batch, s, cfg.hidden, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    ).to(dt)
    ref = reference_weights(cfg)
    xr = x.clone().requires_grad_(True)
    yr = reference_forward(cfg, ref, xr)
    (yr * gy).sum().backward()
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    out = {}
    for plan in plans:
        model = ParallelTransformer(cfg, device=device)
        xl = x[:, sl].to(device).clone().requires_grad_(True)
        y = model(xl, plan)
        (y * gy[:, sl].to(device)).sum().backward()
        model.finish_grads()

        def rel(a, b):
            a, b = a.detach().cpu(), b.detach()
            return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))

        dw = 0.0
        for i, blk in enumerate(model.blocks):
            for name in weight_names(cfg):
                dim = SHARD_DIM[name]
                want = ref[i][name].grad if dim is None else ref[i][name].grad.chunk(p, dim)[rank]
                dw = max(dw, rel(getattr(blk, name).grad, want))
        out[str(plan)] = {"y": rel(y, yr[:, sl]), "dx": rel(xl.grad, xr.grad[:, sl]), "dW": dw}
    return out


def _all_checks(rank: int, p: int, device: str = "cpu") -> dict[str, dict]:
    if device == "cuda":  # one GPU per rank
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    out = {name: _errors(cfg, PLANS[name], rank, p, device=device) for name, cfg in CONFIGS}
    out["ring_vs_zigzag"] = _zigzag_vs_plain_ring(rank, p, device)
    out["overlap_vs_sync"] = _overlap_vs_sync(rank, p, device)
    return out


def _overlap_vs_sync(rank: int, p: int, device: str, per_rank: int = 8) -> dict[str, float]:
    # the overlapped path (prefetched gathers and broadcasts, early KV sends in ring backward) runs
    # the same arithmetic as the synchronous one: outputs and every gradient must be identical
    worst = {}
    for base in (GQA, ZIGZAG, SWIGLU):
        x = torch.randn(2, per_rank * p, base.hidden, generator=torch.Generator().manual_seed(4))
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        for plan in ("ulysses", "ring", "metp", "megatron", ("metp", "ulysses"), ("ring", "ulysses")):
            runs = []
            for overlap in (False, True):
                cfg = dataclasses.replace(base, overlap=overlap)
                model = ParallelTransformer(cfg, device=device)
                xl = x[:, sl].to(device).clone().requires_grad_(True)
                y = model(xl, plan)
                (y * y).sum().backward()
                model.finish_grads()
                runs.append([y.detach(), xl.grad] + [prm.grad for prm in model.parameters()])
            diff = max(float((a - b).abs().max()) for a, b in zip(*runs, strict=True))
            worst[f"{base.name} {plan}"] = diff
    return worst


def _zigzag_vs_plain_ring(rank: int, p: int, device: str, per_rank: int = 10) -> dict[str, float]:
    # the same global q, k, v through the plain ring (contiguous shards) and the zigzag ring (moved
    # to zigzag shards and back): outputs and q/k/v gradients must agree
    s = per_rank * p
    g = torch.Generator().manual_seed(3)
    q, k, v, gy = (torch.randn(2, h, s, 16, generator=g, dtype=torch.float64).float() for h in (8, 4, 4, 8))
    sl = slice(rank * per_rank, (rank + 1) * per_rank)
    outs = {}
    for layout in ("contiguous", "zigzag"):
        ql, kl, vl = (t[:, :, sl].to(device).clone().requires_grad_(True) for t in (q, k, v))
        if layout == "zigzag" and p > 1:
            qz, kz, vz = (to_zigzag(t, 2) for t in (ql, kl, vl))
            y = from_zigzag(ring_attention(qz, kz, vz, causal=True, chunk=3, layout="zigzag"), 2)
        else:
            y = ring_attention(ql, kl, vl, causal=True, chunk=3)
        (y * gy[:, :, sl].to(device)).sum().backward()
        outs[layout] = [t.detach().cpu() for t in (y, ql.grad, kl.grad, vl.grad)]

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    return {
        what: rel(a, b)
        for what, a, b in zip(("y", "dq", "dk", "dv"), outs["zigzag"], outs["contiguous"], strict=True)
    }


def _assert(results: list[dict], p: int) -> None:
    tol = {"gqa": 2e-6, "mha": 2e-6, "fp64": 1e-12, "zigzag": 2e-6, "swiglu": 2e-6}
    for what in results[0]["overlap_vs_sync"]:
        worst = max(r["overlap_vs_sync"][what] for r in results)
        assert worst == 0, f"overlapped vs synchronous {what} at world {p}: max difference {worst:.2e}"
    for what in ("y", "dq", "dk", "dv"):
        worst = max(r["ring_vs_zigzag"][what] for r in results)
        assert worst < 2e-6, f"zigzag ring vs plain ring at world {p}: relative error of {what} = {worst:.2e}"
    for name in tol:
        for plan in PLANS[name]:
            for what in ("y", "dx", "dW"):
                worst = max(r[name][str(plan)][what] for r in results)
                assert worst < tol[name], (
                    f"{name} plan {plan} at world {p}: relative error of {what} = {worst:.2e}"
                )


@pytest.mark.parametrize("world", [2, 4])
def test_every_strategy_and_mix_equals_the_single_process_stack(world):
    _assert(launch(_all_checks, world, timeout_s=600), world)


@pytest.mark.gpu
def test_every_strategy_and_mix_equals_the_single_process_stack_on_nccl():
    world = min(2, torch.cuda.device_count())
    _assert(launch(_all_checks, world, "cuda", backend="nccl", timeout_s=600), world)


def test_single_process_strategies_equal_the_reference():
    _assert([_all_checks(0, 1)], 1)
