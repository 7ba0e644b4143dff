"""A causal LM as a delta model: every policy's gradients equal the plain step's, the loss block manages the logits."""

from __future__ import annotations

import pytest
import torch

from delta.api import Delta
from delta.bench import _step_fn
from delta.llm import lm_case
from delta.plan import BUDGETED, POLICIES
from effcore.testing.tiny import tiny_model

BW = 5e9


def _case(tie: bool):
    model = tiny_model("llama", num_hidden_layers=3, tie_word_embeddings=tie)
    sequences = torch.randint(0, 128, (12, 24), generator=torch.Generator().manual_seed(0))
    return lm_case("tiny-llama", model, sequences, device=torch.device("cpu"))


def _grads(case) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in case.model.named_parameters() if p.grad is not None}
    case.model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("tie", [False, True])
def test_every_policy_gives_the_plain_gradients_on_a_tiny_llama(tie):
    case = _case(tie)
    batch = case.make_batch(4, torch.Generator().manual_seed(1))
    step = _step_fn(case)
    step(*batch)
    ref = _grads(case)
    assert len(ref) == len(list(case.model.parameters())), "every parameter gets a gradient"
    plain = Delta(case.model, policy="none", blocks=case.blocks, bandwidth=BW).plan_for(step, *batch)
    _grads(case)
    for policy in POLICIES:
        budget = None
        if policy in BUDGETED:
            floor = Delta(case.model, policy=policy, budget=2**40, blocks=case.blocks, bandwidth=BW)
            minimum = floor.plan_for(step, *batch).minimum
            _grads(case)
            assert minimum < plain.projected.peak, f"{policy}: nothing to release"
            budget = (minimum + plain.projected.peak) // 2
        runner = Delta(case.model, policy=policy, budget=budget, blocks=case.blocks, bandwidth=BW)
        for _ in range(2):  # the profiled step, then the planned one
            runner.step(step, *batch)
            got = _grads(case)
            for name, g in ref.items():
                assert torch.equal(got[name], g), f"{policy}: {name} differs by {(got[name] - g).abs().max()}"
        assert runner.last.meter.peak == runner.last_plan.projected.peak
        if budget is not None:
            assert runner.last.meter.peak <= budget, policy


def test_the_logits_and_the_loss_are_saved_inside_a_block():
    case = _case(False)
    batch = case.make_batch(4, torch.Generator().manual_seed(1))
    trace = (
        Delta(case.model, policy="none", blocks=case.blocks, bandwidth=BW)
        .plan_for(_step_fn(case), *batch)
        .trace
    )
    logits_bytes = 4 * 24 * 128 * 4  # batch x length x vocabulary fp32
    outside = [s for s in trace.slots if s.block == -1 and s.nbytes >= logits_bytes // 2]
    assert not outside, f"kept whatever the budget: {[(s.op, s.shape) for s in outside]}"
    head = trace.blocks[-1]
    assert head.name == "head+loss" and not head.not_recomputable
    # the log-softmax is saved twice (by log_softmax and by nll_loss): one storage, counted once
    log_probs = 4 * 23 * 128 * 4
    assert trace.block_saved_bytes(head.index) == log_probs + 4 * 24 * 64 * 4 + 4 * 23 * 8 + 4


def test_the_loss_is_the_models_own_next_token_loss():
    case = _case(True)
    (ids,) = case.make_batch(3, torch.Generator().manual_seed(2))
    with torch.no_grad():  # HF shifts the labels instead of the logits: equal up to summation order
        torch.testing.assert_close(case.loss(case.model, ids), case.model(input_ids=ids, labels=ids).loss,
                                   rtol=1e-6, atol=0)  # fmt: skip


def test_a_batch_larger_than_the_corpus_is_refused():
    case = _case(False)
    with pytest.raises(Exception, match="needs more sequences than the corpus holds"):
        case.make_batch(13, torch.Generator())
