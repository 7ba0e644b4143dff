"""Merak's schedules: every stage's list is complete, ordered and deadlock-free; the shifted path is Merak's."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from merak.schedules import SCHEDULES, instructions, validate


@given(kind=st.sampled_from(SCHEDULES), stages=st.integers(1, 8), extra=st.integers(0, 8))
def test_every_schedule_is_valid_and_deadlock_free(kind, stages, extra):
    microbatches = max(stages, 4 if kind == "shifted-critical-path" else 1) + extra
    validate(kind, stages, microbatches)


def test_one_f_one_b_keeps_p_minus_s_in_flight():
    for s in range(4):
        order = instructions("1f1b", s, 4, 8)
        in_flight = peak = 0
        for ins in order:
            in_flight += 1 if ins.op == "F" else -1 if ins.op == "B" else 0
            peak = max(peak, in_flight)
        assert peak == 4 - s


def test_shifted_critical_path_moves_the_third_forward_on_stage_p_minus_2():
    assert [str(i) for i in instructions("shifted-critical-path", 2, 4, 6)] == [
        "F0*", "F1*", "F2", "R0", "B0", "R1", "B1", "F3", "B2", "F4", "B3", "F5", "B4", "B5",
    ]  # fmt: skip
    assert [str(i) for i in instructions("shifted-critical-path", 3, 4, 6)][:4] == ["F0!", "B0", "F1!", "B1"]


def test_pre_recompute_checkpoints_the_cool_down_forwards():
    # micro-batch m on stage s is recomputed ahead when M - m + s < P (Merak's PreRecomputeTrainSchedule)
    full = [i.mb for i in instructions("pre-recompute", 0, 4, 8) if i.op == "F" and i.ckpt == "full"]
    assert full == [5, 6, 7]


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("zb", 0, 2, 4), "unknown schedule"),
        (("1f1b", 2, 2, 4), "not in 0..1"),
        (("1f1b", 0, 2, 0), "at least one micro-batch"),
        (("pre-recompute", 0, 4, 2), "at least as many micro-batches as stages"),
        (("shifted-critical-path", 0, 2, 3), "at least 4 micro-batches"),
    ],
)
def test_bad_schedules_are_errors(args, match):
    with pytest.raises(ConfigError, match=match):
        instructions(*args)
