"""paradyse's part of the effml tour: strategies agree on gloo, plans switch with length, the simulator at scale."""

from __future__ import annotations

__all__ = ["demo"]


def _check(rank: int, world: int) -> float:
    import torch

    from paradyse.config import MODELS
    from paradyse.model import ParallelTransformer
    from paradyse.reference import reference_forward, reference_weights

    cfg = MODELS["tiny"]
    x = torch.randn(1, 8 * world, cfg.hidden, generator=torch.Generator().manual_seed(0))
    ref = reference_forward(cfg, reference_weights(cfg, requires_grad=False), x)
    worst = 0.0
    for plan in ("megatron", "ulysses", "ring", "metp", ["megatron", "metp"]):
        with torch.no_grad():
            y = ParallelTransformer(cfg)(x[:, rank * 8 : (rank + 1) * 8], plan)
        worst = max(worst, float((y - ref[:, rank * 8 : (rank + 1) * 8]).abs().max()))
    return worst


def demo(*, quick: bool = False) -> list[dict]:
    """Equivalence on 2 gloo ranks, the adaptive plan at three lengths, and a 624K-token simulation."""
    from effcore.testing.distributed import launch
    from effcore.tour import TourSteps
    from paradyse.config import MODELS
    from paradyse.planner import CostTable, Planner, compress
    from paradyse.simulate import gpu_hardware, simulate, time_models

    step = TourSteps("paradyse")

    def equivalence() -> str:
        worst = max(launch(_check, 2))
        return f"4 strategies + a mix on 2 gloo ranks vs one process: max |diff| {worst:.1e}"

    def plans() -> str:
        cfg, hw = MODELS["paper-7b"], gpu_hardware("H100")
        planner = Planner(cap=hw.memory_bytes, margin=512 * 2**20, layers=cfg.layers)  # as `simulate`
        out = []
        for s in (8192, 262144, 638976):
            plan = planner.plan(CostTable.build(cfg, 32, s, time_models(cfg, 32, hw)))
            out.append(f"{s // 1024}K: {compress(plan.layers)}")
        return "7B on 32 H100 (simulated): " + "; ".join(out)

    def sim() -> str:
        cfg, hw = MODELS["paper-7b"], gpu_hardware("H100")
        res = simulate(cfg, 32, hw, [4096 * 2**i for i in range(8)] + [638976])
        sm = res["summary"]
        ooms = ", ".join(f"{k} {sm[k]['oom']}" for k in ("megatron", "ulysses", "ring", "metp"))
        return (f"4K..624K: OOMs per static strategy: {ooms}; adaptive {sm['adaptive']['oom']}; "
                f"adaptive is {sm['metp']['speedup']:.2f}x faster than static METP")  # fmt: skip

    step("strategies equal the single-process stack", equivalence)
    step("the adaptive plan switches with length", plans)
    step("simulated 7B, 4K to 624K tokens", sim)
    return step.rows
