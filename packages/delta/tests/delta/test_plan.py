"""DELTA's filter and director on one profiled trace: release only what the budget needs, choose by cost."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from delta.api import Delta
from delta.models import tiny_net
from delta.plan import BUDGETED, make_plan


@pytest.fixture(scope="module")
def trace():
    model = tiny_net(depth=4, width=48, seed=0)
    x, y = torch.randn(32, 48), torch.randint(0, 10, (32,))

    def fn(x, y):
        F.cross_entropy(model(x), y).backward()

    return Delta(model, policy="none").plan_for(fn, x, y).trace


def _plan(trace, policy, budget, **kw):
    return make_plan(trace, policy, budget, prefetch=None, overlap=False, **{"bandwidth": 5e9, **kw})


@pytest.mark.parametrize("policy", BUDGETED)
def test_nothing_is_released_when_the_plain_step_fits(trace, policy):
    plain = _plan(trace, "none", None).projected.peak
    assert _plan(trace, policy, plain).actions == {}


def test_the_filter_releases_only_part_when_the_budget_allows(trace):
    plain = _plan(trace, "none", None).projected.peak
    floor = _plan(trace, "offload", None).projected.peak
    plan = _plan(trace, "delta", (plain + floor) // 2)
    kept = plan.summary()["keep_tensors"]
    assert plan.projected.peak <= (plain + floor) // 2 and 0 < len(plan.actions) < len(trace.group_slots())
    assert kept > _plan(trace, "offload", None).summary()["keep_tensors"]


def test_the_director_recomputes_when_transfers_are_slow_and_swaps_when_they_are_fast(trace):
    plain = _plan(trace, "none", None).projected.peak
    budget = (plain + _plan(trace, "checkpoint", None).projected.peak) // 2
    slow = _plan(trace, "delta", budget, bandwidth=1e3)  # 1 kB/s: any swap costs more than a rerun
    fast = _plan(trace, "delta", budget, bandwidth=1e15)
    assert set(slow.actions.values()) <= {"recompute"} and "recompute" in slow.actions.values()
    assert set(fast.actions.values()) == {"swap"}


def test_a_host_cap_of_zero_leaves_recompute_only(trace):
    plain = _plan(trace, "none", None).projected.peak
    budget = (plain + _plan(trace, "checkpoint", None).projected.peak) // 2
    plan = _plan(trace, "delta", budget, bandwidth=1e15, max_host_bytes=0)
    assert "swap" not in plan.actions.values() and plan.projected.peak <= budget


def test_the_minimum_of_releasing_nothing_is_the_plain_peak(trace):
    plan = _plan(trace, "none", None)
    assert plan.minimum == plan.projected.peak and plan.actions == {}
