"""delta's part of the effml tour: DELTA's plan on ResNet-50 and exact gradients under a budget."""

from __future__ import annotations

__all__ = ["demo"]


def demo(*, quick: bool = False) -> list[dict]:
    """A branchy net trained with room for half of what its step saves, gradients equal to the plain run; DELTA's
    plan for ResNet-50 (64x64 inputs) beside DTR and checkpoint-all on the same profiled step."""
    from effcore.tour import TourSteps

    step = TourSteps("delta")

    def exact() -> str:
        import torch
        from torch.nn import functional as F

        from delta.api import Delta
        from delta.models import tiny_net

        model = tiny_net(depth=4, width=64, dropout=0.1)
        x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))

        def fn(x, y):
            F.cross_entropy(model(x), y).backward()

        torch.manual_seed(0)
        fn(x, y)
        ref = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        plain = Delta(model, policy="none").plan_for(fn, x, y).projected.peak
        model.zero_grad(set_to_none=True)
        budget = (plain + Delta(model, policy="none").static_bytes) // 2
        runner = Delta(model, policy="delta", budget=budget)
        for _ in range(2):
            model.zero_grad(set_to_none=True)
            torch.manual_seed(0)
            runner.step(fn, x, y)
        same = all(torch.equal(p.grad, r) for p, r in zip(model.parameters(), ref, strict=True))
        s = runner.last_plan.summary()
        return (f"budget {budget / 2**10:.0f} KiB (plain {plain / 2**10:.0f} KiB): held {runner.last.meter.peak / 2**10:.0f}"
                f" KiB, {s['swap_tensors']} swapped / {s['recompute_tensors']} recomputed; gradients bit-identical: {same}")  # fmt: skip

    def resnet() -> str:
        from delta.bench import profile_trace
        from delta.models import build_model
        from delta.plan import make_plan

        trace = profile_trace(build_model("resnet50", image_size=64), 4)
        budget = trace.static_bytes + trace.saved_bytes() // 2
        parts = []
        for policy in ("delta", "dtr", "checkpoint"):
            plan = make_plan(trace, policy, budget, bandwidth=5e9, prefetch=None, overlap=False)
            parts.append(f"{policy} +{plan.extra_s * 1e3:.0f} ms")
        return "ResNet-50 b4 under params+grads+50% of saved: estimated extra time " + ", ".join(parts)

    step("a step with room for half its saved tensors, gradients exact", exact)
    if not quick:
        step("DELTA vs DTR vs checkpoint-all on ResNet-50", resnet)
    return step.rows
