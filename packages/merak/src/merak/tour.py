"""merak's part of the effml tour: partition SmolLM2, train it as a pipeline, predict the paper's speedup."""

from __future__ import annotations

__all__ = ["demo"]

SEQ, MICRO = 64, 4


def _pipeline(rank: int, world: int, blocks) -> tuple[float | None, dict]:
    from merak.models import load_model
    from merak.parallel import parallelize

    pm = parallelize(load_model("smollm2"), (1, 1, world), microbatch=(1, SEQ), microbatches=MICRO,
                     schedule="shifted-critical-path" if MICRO >= 4 else "1f1b", recompute_ratio=0.5)  # fmt: skip
    loss = pm.train_step(blocks, blocks)
    return (None if loss is None else loss.item()), pm.full_tensors(grads=True)


def demo(*, quick: bool = False) -> list[dict]:
    """SmolLM2 cut into Merak's shards and stages; a 2-rank gloo pipeline step equal to one process;
    the paper's GPT-1.5B on 64 A100s simulated against a Megatron-DeepSpeed-style baseline."""
    from effcore.assets import load_text, load_tokenizer
    from effcore.lm import token_blocks
    from effcore.testing.distributed import launch
    from effcore.tour import TourSteps

    step = TourSteps("merak")

    def partition() -> str:
        from effcore.device import known_spec
        from merak.capture import capture
        from merak.models import load_model
        from merak.plan import plan_pipeline
        from merak.report import describe_leaves

        captured = capture(load_model("smollm2", weights=False), (1, 512))
        plan = plan_pipeline(captured, 4, recompute_ratio=0.5, spec=known_spec("H100"))
        times = [st.time_s for st in plan.stages]
        held = [describe_leaves([lf for i in range(st.first, st.last + 1) for lf in plan.shards[i].leaves],
                                captured.blocks) for st in plan.stages]  # fmt: skip
        return (f"{len(plan.shards)} shards -> 4 stages ({' | '.join(held)}); slowest/mean stage "
                f"{max(times) / (sum(times) / 4):.2f} on the H100 datasheet")  # fmt: skip

    def pipeline() -> str:
        import torch

        from merak.models import load_model
        from merak.parallel import causal_lm_loss

        tok = load_tokenizer("smollm2")
        ids = tok(load_text("wikitext2", "test", max_chars=20_000))["input_ids"]
        blocks = token_blocks(torch.tensor(ids), block_size=SEQ, max_blocks=MICRO)
        runs = launch(_pipeline, 2, blocks, timeout_s=900)
        model = load_model("smollm2")
        losses = [causal_lm_loss(model(input_ids=blocks[i : i + 1]).logits, blocks[i : i + 1]) / MICRO
                  for i in range(MICRO)]  # fmt: skip
        sum(losses).backward()
        ref = {n: p.grad for n, p in model.named_parameters()}
        ref.setdefault("lm_head.weight", ref["model.embed_tokens.weight"])
        worst = max(float((g - ref[n]).abs().max()) for _, grads in runs for n, g in grads.items())
        loss = next(r[0] for r in runs if r[0] is not None)
        return (f"shifted-critical-path, 2 gloo ranks, {MICRO} x 1x{SEQ} WikiText-2 tokens: loss {loss:.4f} "
                f"(one process {sum(losses).item():.4f}), max |grad diff| {worst:.1e}")  # fmt: skip

    def paper() -> str:
        from merak.presets import cluster, gpt_1_5b, predict_speedup

        size = gpt_1_5b()
        result = predict_speedup(size, cluster("A100"))
        return (f"GPT-1.5B on 64 A100 (simulated, mesh {size.dp},{size.tp},{size.pp}): Merak "
                f"{result.speedup:.2f}x the 1F1B + full-recompute baseline (paper: {size.paper_speedup}x)")  # fmt: skip

    step("Merak's shards and stages of SmolLM2 (meta device)", partition)
    step("a pipeline step on gloo equals one process", pipeline)
    if not quick:
        step("the paper's 64-GPU setting, simulated", paper)
    return step.rows
