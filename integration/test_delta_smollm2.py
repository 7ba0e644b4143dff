"""delta end to end on SmolLM2-135M (the bundled weights) and WikiText-2 tokens: a DELTA-managed and a
DTR-managed training step under half the plain step's saved memory, gradients bit-identical to the plain step."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.integration

SEQ, BATCH = 64, 2


@pytest.fixture(scope="module")
def case():
    from effcore.assets import data_dir, load_causal_lm, load_text, load_tokenizer
    from effcore.errors import DataNotFoundError
    from effcore.lm import token_blocks

    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    ids = load_tokenizer("smollm2")(load_text("wikitext2", "test", max_chars=20_000))["input_ids"]
    batch = token_blocks(torch.tensor(ids), block_size=SEQ, max_blocks=BATCH)
    model, _ = load_causal_lm("smollm2", dtype=torch.float32)
    model.train()
    blocks = [(f"layers.{i}", layer) for i, layer in enumerate(model.model.layers)]
    return model, blocks, batch


@pytest.mark.parametrize("policy", ["delta", "dtr"])
def test_smollm2_step_under_half_the_saved_memory_gives_the_plain_gradients(case, policy):
    from delta.api import Delta

    model, blocks, batch = case

    def step(ids):
        model(input_ids=ids, labels=ids).loss.backward()

    step(batch)
    ref = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    trace = Delta(model, policy="none", blocks=blocks).plan_for(step, batch).trace
    model.zero_grad(set_to_none=True)
    budget = trace.static_bytes + trace.saved_bytes() // 2
    runner = Delta(model, policy=policy, budget=budget, blocks=blocks, bandwidth=5e9)
    for _ in range(2):  # profiled, then planned
        runner.step(step, batch)
        for n, p in model.named_parameters():
            if n in ref:
                assert torch.equal(p.grad, ref[n]), f"{policy}: {n} differs"
        model.zero_grad(set_to_none=True)
    summary = runner.last_plan.summary()
    assert runner.last.meter.peak <= budget
    released = summary["swap_tensors"] + summary["recompute_tensors"]
    assert released > 0 and (policy != "dtr" or summary["recompute_tensors"] > 0)


def test_smollm2_case_plans_the_logits_and_runs_delta_with_the_plain_gradients():
    """`delta ... -m smollm2` (delta.models.build_model): WikiText-2 sequences, the head+loss block holding
    the step's largest tensors, and a DELTA step under params + grads + 30% of the saved bytes."""
    from delta.api import Delta
    from delta.bench import _step_fn
    from delta.models import build_model
    from effcore.assets import data_dir
    from effcore.errors import DataNotFoundError

    try:
        data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    case = build_model("smollm2", seq_len=32)
    names = [n for n, _ in case.blocks]
    assert names[0] == "embed" and names[-2:] == ["norm", "head+loss"] and len(names) == 30 + 3
    batch = case.make_batch(2, torch.Generator().manual_seed(0))
    assert batch[0].shape == (2, 32)
    step = _step_fn(case)
    step(*batch)
    ref = {n: p.grad.clone() for n, p in case.model.named_parameters() if p.grad is not None}
    case.model.zero_grad(set_to_none=True)
    trace = Delta(case.model, policy="none", blocks=case.blocks).plan_for(step, *batch).trace
    case.model.zero_grad(set_to_none=True)
    largest = max(trace.slots, key=lambda s: s.nbytes)
    assert trace.blocks[largest.block].name == "head+loss" and largest.nbytes >= 2 * 31 * 49152 * 4
    budget = trace.static_bytes + trace.saved_bytes() * 3 // 10
    runner = Delta(case.model, policy="delta", budget=budget, blocks=case.blocks, bandwidth=5e9)
    plan = runner.plan_trace(trace)  # the profile above serves this plan: the step below runs it
    assert plan.summary()["swap_tensors"] + plan.summary()["recompute_tensors"] > 0
    runner.step(step, *batch)
    assert runner.profiled == 0, "the step ran the plan, it did not profile again"
    for n, p in case.model.named_parameters():
        if n in ref:
            assert torch.equal(p.grad, ref[n]), f"{n} differs"
    assert runner.last.meter.peak == plan.projected.peak <= budget
