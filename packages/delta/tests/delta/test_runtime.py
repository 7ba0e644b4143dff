"""DELTA's runtime against the plain run: exact gradients, the budget kept, loud failures for what it cannot do."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, note, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

import delta.runtime as rt
from delta.api import Delta
from delta.models import tiny_net
from delta.plan import BUDGETED, POLICIES
from delta.runtime import PlanMismatchError
from effcore.errors import ConfigError, EffmlError

BW = 5e9  # a fixed host bandwidth: plans do not depend on a measurement in tests


def _step(model: nn.Module):
    def fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.detach()

    return fn


def _grads(model: nn.Module) -> list[torch.Tensor]:
    out = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    return out


def _batch(n: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, width, generator=g), torch.randint(0, 10, (n,), generator=g)


def _plain(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    _step(model)(x, y)
    return _grads(model)


@settings(max_examples=15)
@given(
    depth=st.integers(1, 4),
    width=st.sampled_from([8, 24, 40]),
    batch=st.integers(1, 24),
    dropout=st.sampled_from([0.0, 0.3]),
    policy=st.sampled_from(POLICIES),
    fraction=st.floats(0.0, 1.0),
    prefetch=st.sampled_from([None, 0, 1]),
    seed=st.integers(0, 2**16),
)
def test_every_policy_gives_the_plain_gradients_within_budget(
    depth, width, batch, dropout, policy, fraction, prefetch, seed
):
    model = tiny_net(depth=depth, width=width, dropout=dropout, seed=seed)
    x, y = _batch(batch, width, seed)
    ref = _plain(model, x, y, seed)
    probe = Delta(model, policy="offload", bandwidth=BW, min_bytes=0)
    plain_peak = probe.plan_for(_step(model), x, y).projected.peak
    model.zero_grad(set_to_none=True)
    budget = None
    if policy in BUDGETED:
        floor = Delta(model, policy=policy, budget=2**40, bandwidth=BW, min_bytes=0, prefetch=prefetch)
        minimum = floor.plan_for(_step(model), x, y).minimum
        model.zero_grad(set_to_none=True)
        budget = int(minimum + fraction * (max(plain_peak, minimum) + 4096 - minimum))
    note(f"policy={policy} budget={budget} plain={plain_peak}")
    delta = Delta(model, policy=policy, budget=budget, bandwidth=BW, min_bytes=0, prefetch=prefetch)
    for _ in range(2):  # the profiled step, then the planned one
        torch.manual_seed(seed)
        delta.step(_step(model), x, y)
        got = _grads(model)
        for a, b in zip(ref, got, strict=True):
            assert torch.equal(a, b), f"{policy}: gradient differs by {(a - b).abs().max()}"
    plan = delta.last_plan
    assert delta.last.meter.peak == plan.projected.peak, "the runtime holds exactly what the plan projected"
    if budget is not None:
        assert delta.last.meter.peak <= budget


def test_swapped_tensors_come_back_bit_exact_with_their_strides():
    model = tiny_net(depth=2, width=16, seed=3)
    x, y = _batch(8, 16, 3)
    delta = Delta(model, policy="offload", bandwidth=BW, min_bytes=0)
    plan = delta.plan_for(_step(model), x, y)
    strided = [s for s in plan.trace.slots if s.copy_nbytes < s.nbytes]
    assert strided, "BranchBlock saves slices of one output: views that are not the whole storage"
    seen = []
    original_unpack = rt._Step._load

    def spy(self, i):
        out = original_unpack(self, i)
        seen.append((self.strides[i], out.stride()))
        return out

    rt._Step._load = spy
    try:
        model.zero_grad(set_to_none=True)
        delta.step(_step(model), x, y)
    finally:
        rt._Step._load = original_unpack
    assert seen and all(shape_stride[1] == got for shape_stride, got in seen)


def test_a_new_shape_is_profiled_and_planned_again():
    model = tiny_net(depth=2, width=16, seed=1)
    delta = Delta(model, policy="delta", budget=10**7, bandwidth=BW)
    for n in (4, 8, 4):
        x, y = _batch(n, 16, n)
        ref = _plain(model, x, y, 0)
        torch.manual_seed(0)
        delta.step(_step(model), x, y)
        assert all(torch.equal(a, b) for a, b in zip(ref, _grads(model), strict=True))
    assert delta.profiled == 2 and len(delta.plans) == 2


def test_a_plan_is_not_silently_reused_when_control_flow_changes():
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.extra = nn.Linear(16, 16), False

        def forward(self, x):
            h = self.lin(x).tanh()
            return h.sigmoid() if self.extra else h

    block = Flaky()
    model = nn.Sequential(block, nn.Linear(16, 10))
    delta = Delta(model, policy="offload", bandwidth=BW, min_bytes=0)
    x, y = _batch(4, 16, 0)
    delta.step(_step(model), x, y)
    block.extra = True
    with pytest.raises(PlanMismatchError, match="the plan expected"):
        delta.step(_step(model), x, y)


def test_budget_below_the_minimum_names_the_minimum():
    model = tiny_net(depth=3, width=32, seed=0)
    x, y = _batch(16, 32, 0)
    delta = Delta(model, policy="delta", budget=Delta(model, policy="none").static_bytes + 1, bandwidth=BW)
    with pytest.raises(ConfigError, match=r"below the minimum .*raise the budget to at least \d+ bytes"):
        delta.plan_for(_step(model), x, y)


def test_budget_below_the_parameters_fails_before_any_work():
    model = tiny_net(depth=1, width=8)
    with pytest.raises(ConfigError, match="below the parameters and gradients alone"):
        Delta(model, policy="delta", budget=100)
    with pytest.raises(ConfigError, match="needs a memory budget"):
        Delta(model, policy="dtr")


class _Sneaky(nn.Module):
    def __init__(self, clone: bool = False) -> None:
        super().__init__()
        self.lin, self.clone = nn.Linear(8, 8), clone

    def forward(self, x):
        h = self.lin(x)
        out = (h.clone() if self.clone else h).sin()  # saves h
        h.mul_(2)  # changes h after it was saved
        return out + h


def test_in_place_change_of_a_saved_tensor_is_an_error_or_the_value_the_op_read():
    torch.manual_seed(0)
    model = nn.Sequential(_Sneaky(), nn.Linear(8, 10))
    x, y = _batch(4, 8, 0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        _step(model)(x, y)  # torch's own check, in the plain run
    model.zero_grad(set_to_none=True)
    model[0].clone = True  # the same forward, written correctly: sin reads h before the change
    ref = _plain(model, x, y, 0)
    model[0].clone = False
    kept = Delta(model, policy="none", min_bytes=0, bandwidth=BW)
    kept.step(_step(model), x, y)  # the profiled step swaps: the host copy is the value sin read
    assert all(torch.equal(a, b) for a, b in zip(ref, _grads(model), strict=True))
    with pytest.raises(EffmlError, match="modified in place after it was saved"):
        kept.step(_step(model), x, y)  # kept: the change is seen, as torch would see it
    model.zero_grad(set_to_none=True)
    for policy in ("offload", "checkpoint"):
        released = Delta(model, policy=policy, min_bytes=0, bandwidth=BW)
        for _ in range(2):
            released.step(_step(model), x, y)
            assert all(torch.equal(a, b) for a, b in zip(ref, _grads(model), strict=True)), policy


def test_random_blocks_without_saved_rng_state_are_never_recomputed():
    model = tiny_net(depth=3, width=32, dropout=0.5, seed=2)
    x, y = _batch(16, 32, 2)
    plain_peak = Delta(model, policy="none").plan_for(_step(model), x, y).projected.peak
    delta = Delta(model, policy="dtr", budget=plain_peak - 2048, preserve_rng_state=False, bandwidth=BW)
    with pytest.raises(ConfigError, match="draws random numbers and its RNG state is not saved"):
        delta.plan_for(_step(model), x, y)
    # checkpoint-all keeps what it may not recompute, and the gradients stay exact
    model.zero_grad(set_to_none=True)
    ref = _plain(model, x, y, 7)
    ckpt = Delta(model, policy="checkpoint", preserve_rng_state=False, bandwidth=BW)
    torch.manual_seed(7)
    ckpt.step(_step(model), x, y)
    assert all(torch.equal(a, b) for a, b in zip(ref, _grads(model), strict=True))
    assert ckpt.last_plan.summary()["recompute_tensors"] == 0


def test_a_block_that_changes_its_input_in_place_is_swapped_not_recomputed():
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(inplace=True), nn.Linear(16, 16), nn.Linear(16, 10))
    x, y = _batch(8, 16, 0)
    delta = Delta(model, policy="checkpoint", bandwidth=BW, min_bytes=0)
    plan = delta.plan_for(_step(model), x, y)
    assert plan.trace.blocks[1].not_recomputable
    relu_slots = [s for s in plan.trace.slots if s.block == 1]
    assert all(plan.actions.get(s.storage, "keep") != "recompute" for s in relu_slots)


def test_recompute_leaves_batchnorm_statistics_as_the_plain_run_does():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.Tanh()), nn.Linear(16, 10))
    x, y = _batch(12, 8, 0)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    _step(net)(x, y)
    ref = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(state)
    delta = Delta(net, policy="checkpoint", bandwidth=BW, min_bytes=0)
    plan = delta.plan_for(_step(net), x, y)
    assert plan.summary()["recompute_tensors"] > 0
    net.load_state_dict(state)
    delta.step(_step(net), x, y)  # runs the plan: recomputes block 0 in backward
    for k, v in net.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_a_host_memory_cap_holds_in_the_profiled_step_too():
    model = tiny_net(depth=3, width=32, seed=4)
    x, y = _batch(16, 32, 4)
    ref = _plain(model, x, y, 0)
    runner = Delta(model, policy="checkpoint", max_host_bytes=0, bandwidth=BW)
    for _ in range(2):
        torch.manual_seed(0)
        runner.step(_step(model), x, y)
        assert all(torch.equal(a, b) for a, b in zip(ref, _grads(model), strict=True))
    assert runner.last_plan.summary()["swap_tensors"] == 0
