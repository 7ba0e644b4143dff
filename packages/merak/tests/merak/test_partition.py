"""Stage assignment: the DP is optimal (equals brute force), methods keep stages contiguous, ratios follow Merak."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from merak.partition import ShardCost, assign_stages, min_max_partition, stage_recompute_ratios

_cost = st.builds(
    ShardCost,
    forward_s=st.floats(0.0, 5.0),
    backward_s=st.floats(0.0, 10.0),
    param_bytes=st.integers(0, 1000),
    activation_bytes=st.integers(0, 1000),
    send_bytes=st.integers(0, 1000),
)


def _brute(n: int, parts: int, cost) -> float:
    best = float("inf")
    for cuts in itertools.combinations(range(1, n), parts - 1):
        bounds = [0, *cuts, n]
        best = min(best, max(cost(p, bounds[p], bounds[p + 1] - 1) for p in range(parts)))
    return best


@given(costs=st.lists(_cost, min_size=1, max_size=8), data=st.data())
def test_time_partition_is_optimal(costs, data):
    stages = data.draw(st.integers(1, len(costs)))
    ratio = data.draw(st.sampled_from([None, 0.0, 0.5, 1.0]))
    plans = assign_stages(costs, stages, method="time", recompute_ratio=ratio, bandwidth=100.0)
    assert [p.first for p in plans] == [0] + [p.last + 1 for p in plans[:-1]] and plans[-1].last == len(
        costs
    ) - 1
    ratios = stage_recompute_ratios(stages, ratio)

    def cost(s, i, j):
        fwd = sum(c.forward_s for c in costs[i : j + 1])
        send = 0.0 if s == stages - 1 else costs[j].send_bytes / 100.0
        return fwd + sum(c.backward_s for c in costs[i : j + 1]) + ratios[s] * fwd + send

    assert max(p.time_s for p in plans) == pytest.approx(_brute(len(costs), stages, cost))


@given(weights=st.lists(st.integers(0, 100), min_size=1, max_size=8), data=st.data())
def test_min_max_partition_equals_brute_force(weights, data):
    parts = data.draw(st.integers(1, len(weights)))

    def cost(_, i, j):
        return float(sum(weights[i : j + 1]))

    runs = min_max_partition(len(weights), parts, cost)
    assert len(runs) == parts and all(i <= j for i, j in runs)
    assert max(cost(0, i, j) for i, j in runs) == _brute(len(weights), parts, cost)


def test_uniform_gives_the_remainder_to_the_last_stages():
    costs = [ShardCost(forward_s=1, backward_s=2, param_bytes=1, activation_bytes=1, send_bytes=1)] * 10
    assert [(p.first, p.last) for p in assign_stages(costs, 4, method="uniform")] == [
        (0, 1),
        (2, 3),
        (4, 6),
        (7, 9),
    ]


def test_stage_aware_ratios_follow_merak():
    # stage s (1-indexed) of P: 1 - (1 - r0)(P - 1)/(P - s); the last stage none; clipped at 0
    assert stage_recompute_ratios(4, 0.5) == pytest.approx([0.5, 0.25, 0.0, 0.0])
    assert stage_recompute_ratios(4, 0.9) == pytest.approx([0.9, 0.85, 0.7, 0.0])
    assert stage_recompute_ratios(3, None) == [0.0, 0.0, 0.0]
    # the shifted critical path gives stage P-1 (1-indexed) the ratio of stage P-2
    assert stage_recompute_ratios(4, 0.9, schedule="shifted-critical-path") == pytest.approx(
        [0.9, 0.85, 0.85, 0.0]
    )


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda c: assign_stages(c, 5), "cannot split 3 shards into 5 stages"),
        (lambda c: assign_stages(c, 2, method="greedy"), "unknown partition method"),
        (lambda c: assign_stages(c, 2, recompute_ratio=1.5), r"in \[0, 1\]"),
        (lambda c: assign_stages(c, 2, bandwidth=0), "bandwidth"),
    ],
)
def test_impossible_requests_are_errors(call, match):
    costs = [ShardCost(forward_s=1, backward_s=2, param_bytes=1, activation_bytes=1, send_bytes=1)] * 3
    with pytest.raises(ConfigError, match=match):
        call(costs)
