"""The harness: torch's own baselines give the plain gradients; max batches order as the policies promise."""

from __future__ import annotations

import pytest
import torch

from delta.api import Delta
from delta.bench import find_max_batches, torch_step
from delta.models import build_model


def _grads(case) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in case.model.parameters()]
    case.model.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("method", ["torch-checkpoint", "torch-save-on-cpu"])
def test_torch_baselines_give_the_plain_gradients(method):
    case = build_model("tiny")
    batch = case.make_batch(16, torch.Generator().manual_seed(0))
    case.loss(case.model, *batch).backward()
    ref = _grads(case)
    torch_step(case, method, Delta(case.model, policy="none").blocks)(*batch)
    assert all(torch.equal(a, b) for a, b in zip(ref, _grads(case), strict=True))
    assert not any("forward" in vars(b) for b in case.model), "checkpoint wrappers are removed after the step"


@pytest.mark.slow
def test_torch_sac_budget_runs_on_cpu_close_to_the_plain_gradients():
    case = build_model("tiny")
    batch = case.make_batch(16, torch.Generator().manual_seed(0))
    case.loss(case.model, *batch).backward()
    ref = _grads(case)
    torch_step(case, "torch-sac", Delta(case.model, policy="none").blocks)(*batch)
    for a, b in zip(ref, _grads(case), strict=True):  # inductor fuses ops: close, not bit-identical
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_max_batches_order_as_the_policies_promise():
    case = build_model("tiny")
    budget = 520 * 1024
    best = find_max_batches(case, budget, [4, 16, 64, 256], bandwidth=5e9)
    assert 0 < best["none"][0] <= best["checkpoint"][0] <= best["offload"][0]
    assert best["delta"][0] == best["offload"][0], "with swap allowed, delta reaches offload-all's floor"
    assert all(peak is None or peak <= budget for _, peak in best.values())
