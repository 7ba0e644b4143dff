"""merak.simulate: the discrete-event pipeline simulator, its memory model, calibration and plot."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from effcore.errors import ConfigError
from merak.gantt import gantt
from merak.partition import ShardCost, assign_stages, stage_recompute_ratios
from merak.pipeline import TraceEvent
from merak.presets import GPTSize, cluster, gpt_1_5b, gpt_2_5b, gpt_8_3b, gpt_20b, predict_speedup
from merak.schedules import SCHEDULES, instructions
from merak.simulate import (
    BYTES_PER_PARAM,
    Network,
    SimResult,
    StageCost,
    calibrate,
    costs_from_traces,
    ring_allreduce_s,
    simulate,
    stage_costs,
    static_bytes,
    sub_pipeline_overlap,
)

EPS = 1e-9


@st.composite
def pipelines(draw: st.DrawFn, *, kinds: tuple[str, ...] = SCHEDULES):
    """A schedule kind, stage costs, micro-batch count and network, all drawn at random."""
    kind = draw(st.sampled_from(kinds))
    p = draw(st.integers(1, 6))
    low = {"gpipe": 1, "1f1b": 1, "shifted-critical-path": max(4, p)}.get(kind, p)
    m = draw(st.integers(low, low + 8))
    times = st.floats(0.01, 5.0)
    costs = [
        StageCost(
            forward_s=draw(times),
            backward_s=draw(times),
            recompute_ratio=draw(st.floats(0.0, 1.0)),
            activation_bytes=draw(st.integers(0, 10**6)),
            input_bytes=draw(st.integers(0, 10**4)),
            send_bytes=draw(st.integers(0, 10**4)),
            params=draw(st.integers(0, 10**6)),
            tp_bytes=draw(st.integers(0, 10**4)),
            tp_collectives=draw(st.integers(0, 8)),
        )
        for _ in range(p)
    ]
    net = Network(
        p2p_bandwidth=draw(st.sampled_from([math.inf, 1e3, 1e4, 1e5])),
        p2p_latency=draw(st.sampled_from([0.0, 1e-3, 0.1])),
        tp=draw(st.sampled_from([1, 2, 4])),
        tp_bandwidth=1e5,
        tp_overlap=draw(st.floats(0.0, 1.0)),
        dp=draw(st.sampled_from([1, 2, 8])),
        dp_bandwidth=1e7,
    )
    note(f"{kind} P={p} M={m} {costs} {net}")
    return kind, costs, m, net


def _hops(costs: list[StageCost], net: Network) -> list[float]:
    return [
        c.send_bytes / net.boundary_bandwidth(s, len(costs)) + net.p2p_latency
        for s, c in enumerate(costs[:-1])
    ]


@given(pipelines())
def test_simulate_executes_every_list_in_order_and_respects_dependencies(case) -> None:
    kind, costs, m, net = case
    res = simulate(costs, kind, m, network=net)
    p, hop = len(costs), _hops(costs, net)
    at = {(e.stage, e.op, e.mb): e for evs in res.events for e in evs}
    for s in range(p):
        assert [(e.op, e.mb) for e in res.events[s]] == [(i.op, i.mb) for i in instructions(kind, s, p, m)]
        for prev, nxt in zip(res.events[s], res.events[s][1:], strict=False):
            assert nxt.start >= prev.end - EPS, f"stage {s} runs {prev} and {nxt} at once"
        for e in res.events[s]:
            assert e.end >= e.start
            if e.op in ("B", "R"):
                assert e.start >= at[(s, "F", e.mb)].end - EPS, f"{e} before its forward"
            if e.op == "B" and (s, "R", e.mb) in at:
                assert e.start >= at[(s, "R", e.mb)].end - EPS, f"{e} before its recompute"
            if e.op == "F" and s > 0:
                assert e.start >= at[(s - 1, "F", e.mb)].end + hop[s - 1] - EPS, f"{e} before its activation"
            if e.op == "B" and s < p - 1:
                assert e.start >= at[(s + 1, "B", e.mb)].end + hop[s] - EPS, f"{e} before its gradient"


@given(pipelines())
def test_step_time_bounded_below_by_busiest_stage_and_one_microbatch_path(case) -> None:
    kind, costs, m, net = case
    res = simulate(costs, kind, m, network=net)
    assert res.step_s >= max(res.busy_s) - EPS
    first = [evs for evs in res.events]
    forward = sum(next(e.end - e.start for e in evs if e.op == "F" and e.mb == 0) for evs in first)
    backward = sum(next(e.end - e.start for e in evs if e.op == "B" and e.mb == 0) for evs in first)
    assert res.step_s >= forward + backward + 2 * sum(_hops(costs, net)) - EPS
    assert 0.0 <= res.bubble_overall <= 1.0
    assert all(-EPS <= b <= 1.0 for b in res.bubble)


@given(
    p=st.integers(1, 8),
    m=st.integers(1, 24),
    f=st.floats(0.01, 3.0),
    b=st.floats(0.01, 6.0),
    kind=st.sampled_from(["gpipe", "1f1b"]),
)
def test_gpipe_and_1f1b_bubble_match_closed_form_with_equal_stages(p, m, f, b, kind) -> None:
    res = simulate([StageCost(forward_s=f, backward_s=b)] * p, kind, m)
    assert res.step_s == pytest.approx((m + p - 1) * (f + b))
    assert res.bubble_overall == pytest.approx((p - 1) / (m + p - 1))
    assert all(x == pytest.approx((p - 1) / (m + p - 1)) for x in res.bubble)


@given(p=st.integers(1, 8), m=st.integers(1, 24), f=st.floats(0.01, 3.0), b=st.floats(0.01, 6.0))
def test_1f1b_peak_inflight_is_min_of_microbatches_and_remaining_stages(p, m, f, b) -> None:
    act = 1000
    res = simulate([StageCost(forward_s=f, backward_s=b, activation_bytes=act)] * p, "1f1b", m)
    assert res.peak_inflight == tuple(min(m, p - s) for s in range(p))
    assert res.activation_peak_bytes == tuple(min(m, p - s) * act for s in range(p))


@given(
    p=st.integers(2, 8),
    data=st.data(),
    f=st.floats(0.1, 3.0),
    slow=st.floats(1.0, 3.0),
    hop=st.floats(0.0, 0.25),
)
def test_shifted_critical_path_no_slower_than_1f1b_under_full_recompute(p, data, f, slow, hop) -> None:
    """The paper's case: balanced stages that recompute everything (r0 = 1; the last stage none),
    communication small next to compute. Outside it the shifted schedule can lose: see the bench."""
    m = data.draw(st.integers(max(4, p), 32), label="microbatches")
    ratios = stage_recompute_ratios(p, 1.0)
    costs = [StageCost(forward_s=f, backward_s=slow * f, recompute_ratio=r, send_bytes=1) for r in ratios]
    net = Network(p2p_bandwidth=1 / (hop * f) if hop > 0 else math.inf)
    base = simulate(costs, "1f1b", m, network=net).step_s
    assert simulate(costs, "shifted-critical-path", m, network=net).step_s <= base + EPS


def test_shifted_critical_path_saves_a_recompute_per_stage_on_four_stages() -> None:
    ratios = stage_recompute_ratios(4, 1.0)
    costs = [StageCost(forward_s=1.0, backward_s=2.0, recompute_ratio=r) for r in ratios]
    steps = {k: simulate(costs, k, 8).step_s for k in SCHEDULES if k != "gpipe"}
    # 1F1B: (M + P - 1) slots of F + B + recompute, less the last stage's recompute on the path
    assert steps == {
        "1f1b": 42.0,
        "pre-recompute": 40.0,
        "last-no-recompute": 39.0,
        "shifted-critical-path": 38.0,
    }


def test_memory_model_per_checkpoint_kind() -> None:
    act, inp = 1000, 10
    none = simulate([StageCost(forward_s=1, backward_s=1, activation_bytes=act)], "gpipe", 5)
    assert none.activation_peak_bytes == (5 * act,)
    half = simulate(
        [StageCost(forward_s=1, backward_s=1, activation_bytes=act, input_bytes=inp, recompute_ratio=0.5)],
        "gpipe",
        5,
    )
    # five micro-batches keep half plus the input; the first backward recomputes its half again
    assert half.activation_peak_bytes == (5 * (act // 2 + inp) + act // 2,)
    # pre-recompute on 2 stages, 3 micro-batches: stage 0's last forward keeps only its input
    costs = [StageCost(forward_s=1, backward_s=1, activation_bytes=act, input_bytes=inp)] * 2
    res = simulate(costs, "pre-recompute", 3)
    assert [str(i) for i in instructions("pre-recompute", 0, 2, 3)] == [
        "F0",
        "F1",
        "B0",
        "F2*",
        "B1",
        "R2",
        "B2",
    ]
    assert res.activation_peak_bytes[0] == 2 * act
    levels = dict(res.memory[0])
    r2 = next(e for e in res.events[0] if e.op == "R")
    assert levels[r2.start] == inp + act  # B1 just freed; F2's input and its recomputed activations
    assert res.memory[0][-1][1] == 0


def test_static_memory_and_collective_formulas() -> None:
    assert static_bytes(10) == 10 * BYTES_PER_PARAM
    assert static_bytes(10, optimizer_shards=4) == 10 * (4 + 3)
    assert ring_allreduce_s(100, 1, 1.0) == 0.0
    assert ring_allreduce_s(100, 4, 10.0, 0.5, count=2) == pytest.approx(2 * 3 / 4 * 10 + 2 * 6 * 0.5)
    res = simulate(
        [StageCost(forward_s=1, backward_s=1, params=1000)] * 2,
        "1f1b",
        2,
        network=Network(dp=4, dp_bandwidth=100.0),
        optimizer_shards=4,
    )
    assert res.allreduce[0][1] - res.allreduce[0][0] == pytest.approx(ring_allreduce_s(2000, 4, 100.0))
    assert res.static_bytes == (static_bytes(1000, optimizer_shards=4),) * 2


def test_tensor_parallel_overlap_hides_at_most_the_compute() -> None:
    cost = StageCost(forward_s=1.0, backward_s=2.0, tp_bytes=300, tp_collectives=1)
    net = dict(tp=4, tp_bandwidth=100.0)
    comm = ring_allreduce_s(300, 4, 100.0)  # 4.5 s, longer than the compute
    plain = simulate([cost], "gpipe", 1, network=Network(**net)).step_s
    hidden = simulate([cost], "gpipe", 1, network=Network(**net, tp_overlap=1.0)).step_s
    assert plain == pytest.approx(3.0 + 2 * comm)
    assert hidden == pytest.approx(2 * comm)  # every second of compute hides one of communication


def test_sub_pipeline_overlap_two_streams() -> None:
    assert sub_pipeline_overlap(2.0, 0.0, 4) == 0.0
    # one round, two halves: compute 0-1, 1-2; all-reduce 1-2, 2-3 -> 1 s of 2 exposed
    assert sub_pipeline_overlap(2.0, 2.0, 1) == pytest.approx(0.5)
    # cheap communication: all hidden but the last half-round
    assert sub_pipeline_overlap(10.0, 1.0, 5) == pytest.approx(1 - 1 / 10)
    assert sub_pipeline_overlap(1.0, 100.0, 5) < 0.02


def test_stage_costs_from_plans_carry_inputs_outputs_and_params() -> None:
    shards = [
        ShardCost(
            forward_s=1.0,
            backward_s=2.0,
            param_bytes=8 * (i + 1),
            activation_bytes=100,
            send_bytes=10 * (i + 1),
        )
        for i in range(6)
    ]
    plans = assign_stages(shards, 3, method="uniform", recompute_ratio=0.5)
    costs = stage_costs(plans, shards, param_dtype_bytes=4)
    assert [c.input_bytes for c in costs] == [0, 20, 40]
    assert [c.send_bytes for c in costs] == [20, 40, 0]
    assert [c.params for c in costs] == [(8 + 16) // 4, (24 + 32) // 4, (40 + 48) // 4]
    assert [c.recompute_ratio for c in costs] == [p.recompute_ratio for p in plans]


def _trace_of(res: SimResult, scale: float = 1.0) -> list[list[TraceEvent]]:
    return [
        [TraceEvent(op=e.op, mb=e.mb, start=e.start * scale, end=e.end * scale, wait=0.0) for e in evs]
        for evs in res.events
    ]


def test_calibration_recovers_costs_from_synthetic_traces() -> None:
    truth = [
        StageCost(forward_s=1.0 + s, backward_s=2.0 + s, recompute_ratio=r)
        for s, r in enumerate(stage_recompute_ratios(3, 0.8))
    ]
    kind, m = "shifted-critical-path", 6
    measured = simulate(truth, kind, m)
    guess = [StageCost(forward_s=1.0, backward_s=1.0, recompute_ratio=c.recompute_ratio) for c in truth]
    fitted = costs_from_traces(_trace_of(measured), guess, kind, m)
    for got, want in zip(fitted, truth, strict=True):
        assert got.forward_s == pytest.approx(want.forward_s)
        assert got.backward_s == pytest.approx(want.backward_s)
    exact = calibrate(_trace_of(measured), measured.step_s, fitted, kind, m)
    assert exact.step_error == pytest.approx(0.0, abs=1e-9)
    assert all(row.error == pytest.approx(0.0, abs=1e-9) for row in exact.stages)
    # a run measured 25 % slower than predicted: every stage and the step off by -20 %
    slow = calibrate(_trace_of(measured, 1.25), 1.25 * measured.step_s, truth, kind, m)
    assert slow.step_error == pytest.approx(-0.2)
    assert [row.error for row in slow.stages] == pytest.approx([-0.2] * 3)
    assert slow.to_dict()["stages"][0]["measured_busy_s"] == pytest.approx(1.25 * measured.busy_s[0])


def test_calibration_rejects_mismatched_traces() -> None:
    costs = [StageCost(forward_s=1, backward_s=1)] * 2
    with pytest.raises(ConfigError, match="2 stages"):
        calibrate([[TraceEvent(op="F", mb=0, start=0, end=1, wait=0)]], 1.0, costs, "1f1b", 2)
    with pytest.raises(ConfigError, match="positive"):
        calibrate(_trace_of(simulate(costs, "1f1b", 2)), 0.0, costs, "1f1b", 2)


def test_bad_inputs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="recompute_ratio"):
        StageCost(forward_s=1, backward_s=1, recompute_ratio=1.5)
    with pytest.raises(ConfigError, match="tp_overlap"):
        Network(tp_overlap=2.0)
    with pytest.raises(ConfigError, match="boundaries"):
        simulate([StageCost(forward_s=1, backward_s=1)] * 3, "1f1b", 3, network=Network(p2p_bandwidth=(1.0,)))
    with pytest.raises(ConfigError, match="unknown schedule"):
        simulate([StageCost(forward_s=1, backward_s=1)], "zb", 3)


def test_gantt_writes_each_format(tmp_path) -> None:
    ratios = stage_recompute_ratios(4, 1.0)
    costs = [StageCost(forward_s=1e-3, backward_s=2e-3, recompute_ratio=r, params=10**6) for r in ratios]
    res = simulate(costs, "shifted-critical-path", 8, network=Network(dp=2, dp_bandwidth=1e9))
    for suffix in ("png", "svg"):
        out = gantt(res, tmp_path / f"step.{suffix}")
        assert out.exists() and out.stat().st_size > 1000
    with pytest.raises(ConfigError, match="Gantt"):
        gantt(res, tmp_path / "step.txt")


def test_gpt_size_params_match_the_hf_model_and_bad_meshes_are_rejected() -> None:
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config

    size = GPTSize(
        name="tiny",
        layers=3,
        hidden=48,
        heads=4,
        dp=1,
        tp=2,
        pp=2,
        micro_batch=1,
        microbatches=4,
        vocab=100,
        seq_len=32,
    )
    config = GPT2Config(n_layer=3, n_embd=48, n_head=4, vocab_size=100, n_positions=32)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert size.params == sum(p.numel() for p in model.parameters())
    assert gpt_8_3b().params == pytest.approx(8.3e9, rel=0.01)
    assert gpt_1_5b().world == gpt_2_5b().world == gpt_8_3b().world == gpt_20b().world == 64
    with pytest.raises(ConfigError, match="divide"):
        size.mesh(1, 3, 2)


def test_paper_setting_on_a_small_gpt_baseline_and_merak() -> None:
    """The whole path of the 64-GPU prediction on a small model (capture on meta: a few seconds)."""
    size = GPTSize(
        name="small",
        layers=8,
        hidden=256,
        heads=8,
        dp=2,
        tp=2,
        pp=4,
        micro_batch=2,
        microbatches=8,
        vocab=1000,
        seq_len=128,
    )
    cl = cluster("A100", gpus_per_node=4)
    pred = predict_speedup(size, cl)
    base, merak = pred.baseline, pred.merak
    assert (base.kind, base.method, base.ratios, base.tp_overlap) == ("1f1b", "parameters", (1.0,) * 4, 0.0)
    assert (merak.kind, merak.method) == ("shifted-critical-path", "time")
    assert merak.ratios == tuple(stage_recompute_ratios(4, merak.ratios[0]))
    assert 0.0 < merak.tp_overlap <= 1.0
    assert base.fits and merak.fits
    assert pred.speedup > 1.0
    assert all(c.tp_collectives > 0 for c in base.costs)  # every stage holds blocks
    assert all(end > start for start, end in merak.result.allreduce)  # dp = 2 all-reduces gradients
    json.dumps(pred.to_dict())
