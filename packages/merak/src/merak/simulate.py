"""Discrete-event simulation of one pipeline training step, running Merak's instruction lists.

Every stage executes ``merak.schedules.instructions(kind, s, P, M)`` in order, the same lists the
runtime (``merak.pipeline.MerakSchedule``) executes. ``F(m)`` on stage ``s`` starts when the stage is
free and F(m)'s activation from stage ``s-1`` has arrived; ``B(m)`` when B(m)'s gradient from stage
``s+1`` has arrived; ``R(m)`` needs only the stage. A transfer between neighbours takes
``bytes / bandwidth + latency`` and each link carries one transfer per direction at a time; sends
never block compute (the runtime's sends are asynchronous).

Durations: F and R take the forward; B the backward, plus ``ratio x forward`` when its F was
``"stage"``-checkpointed (Merak's recompute inside the backward) and nothing extra after an R.
Megatron tensor parallelism adds ring all-reduces to each forward and each backward
(``2(t-1)/t x bytes / bandwidth`` plus a latency per collective); ``tp_overlap`` is the fraction of
that time hidden behind compute (Merak's sub-pipelined TP), never more than the compute itself.
The default is 0 (plain Megatron TP, nothing hidden); :func:`sub_pipeline_overlap` derives the
fraction for Merak's two sub-micro-batches. After its last backward each stage all-reduces its
gradients over the data-parallel group (not overlapped, as in DeepSpeed's and Merak's engines).

Memory per stage: an F ``"none"`` keeps the micro-batch's activations until its B ends;
``"stage"`` keeps ``(1 - r)`` of them plus the checkpointed segment's input, and its B briefly
holds the recomputed ``r`` share again; ``"full"`` keeps only the stage input until its R, then
everything until the B ends. Static memory is :data:`BYTES_PER_PARAM` bytes per parameter.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from effcore.errors import ConfigError
from merak.partition import ShardCost, StagePlan
from merak.pipeline import TraceEvent
from merak.schedules import Instr, instructions

__all__ = [
    "BYTES_PER_PARAM",
    "GRAD_BYTES_PER_PARAM",
    "OPTIMIZER_BYTES_PER_PARAM",
    "Calibration",
    "Event",
    "Network",
    "SimResult",
    "StageCalibration",
    "StageCost",
    "calibrate",
    "costs_from_traces",
    "p2p_s",
    "ring_allreduce_s",
    "simulate",
    "stage_costs",
    "static_bytes",
    "sub_pipeline_overlap",
]

# Mixed-precision Adam (ZeRO paper's accounting): fp16 weight 2 + fp16 gradient 2 + fp32 master
# weight, momentum and variance 4 + 4 + 4. Plain fp32 Adam also needs 16 (4 + 4 + 8).
BYTES_PER_PARAM = 16
OPTIMIZER_BYTES_PER_PARAM = 12  # the part ZeRO-1 shards over the data-parallel group
GRAD_BYTES_PER_PARAM = 2  # the data-parallel all-reduce moves fp16 gradients


@dataclass(frozen=True, kw_only=True, slots=True)
class StageCost:
    """One pipeline stage on one rank, per micro-batch: compute seconds (no communication), bytes
    it keeps for backward, its input (what a checkpoint keeps), what it sends to the next stage, its
    parameters, and the tensor-parallel all-reduce traffic of one forward (the backward's is equal:
    Megatron's conjugate ``f``/``g`` operators)."""

    forward_s: float
    backward_s: float
    recompute_ratio: float = 0.0
    activation_bytes: int = 0
    input_bytes: int = 0
    send_bytes: int = 0
    params: int = 0
    tp_bytes: int = 0
    tp_collectives: int = 0

    def __post_init__(self) -> None:
        for name in (
            "forward_s",
            "backward_s",
            "activation_bytes",
            "input_bytes",
            "send_bytes",
            "params",
            "tp_bytes",
            "tp_collectives",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"StageCost.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.recompute_ratio <= 1.0:
            raise ConfigError(f"StageCost.recompute_ratio must be in [0, 1], got {self.recompute_ratio}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Network:
    """Links (bytes/s per direction, seconds per message) and group sizes. ``p2p_bandwidth`` is one
    value for every stage boundary or one per boundary (``P - 1``). Infinite bandwidth and zero
    latency (the defaults) make communication free."""

    p2p_bandwidth: float | tuple[float, ...] = math.inf
    p2p_latency: float = 0.0
    tp: int = 1
    tp_bandwidth: float = math.inf
    tp_latency: float = 0.0
    tp_overlap: float = 0.0
    dp: int = 1
    dp_bandwidth: float = math.inf
    dp_latency: float = 0.0

    def __post_init__(self) -> None:
        bands = self.p2p_bandwidth if isinstance(self.p2p_bandwidth, tuple) else (self.p2p_bandwidth,)
        for name, value in [("p2p_bandwidth", b) for b in bands] + [
            ("tp_bandwidth", self.tp_bandwidth),
            ("dp_bandwidth", self.dp_bandwidth),
        ]:
            if not value > 0:
                raise ConfigError(f"Network.{name} must be positive, got {value}")
        if min(self.p2p_latency, self.tp_latency, self.dp_latency) < 0:
            raise ConfigError("Network latencies must be >= 0")
        if self.tp < 1 or self.dp < 1:
            raise ConfigError(f"Network.tp and Network.dp must be >= 1, got tp={self.tp}, dp={self.dp}")
        if not 0.0 <= self.tp_overlap <= 1.0:
            raise ConfigError(f"Network.tp_overlap must be in [0, 1], got {self.tp_overlap}")

    def boundary_bandwidth(self, boundary: int, stages: int) -> float:
        if not isinstance(self.p2p_bandwidth, tuple):
            return self.p2p_bandwidth
        if len(self.p2p_bandwidth) != stages - 1:
            raise ConfigError(
                f"Network.p2p_bandwidth has {len(self.p2p_bandwidth)} values for {stages - 1} stage boundaries"
            )
        return self.p2p_bandwidth[boundary]


def p2p_s(nbytes: float, bandwidth: float, latency: float = 0.0) -> float:
    """Seconds to send ``nbytes`` over one link."""
    return nbytes / bandwidth + latency


def ring_allreduce_s(
    nbytes: float, ranks: int, bandwidth: float, latency: float = 0.0, *, count: int = 1
) -> float:
    """Seconds for ``count`` ring all-reduces moving ``nbytes`` in total over ``ranks``: each rank
    sends and receives ``2(n-1)/n`` of the data in ``2(n-1)`` steps, each paying ``latency``."""
    if ranks <= 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes / bandwidth + count * 2 * (ranks - 1) * latency


def static_bytes(params: int, *, optimizer_shards: int = 1) -> int:
    """Parameters, gradients and Adam states of ``params`` parameters (ZeRO-1 divides the optimizer's
    share by ``optimizer_shards``, the data-parallel size)."""
    kept = BYTES_PER_PARAM - OPTIMIZER_BYTES_PER_PARAM
    return int(params * (kept + OPTIMIZER_BYTES_PER_PARAM / optimizer_shards))


def sub_pipeline_overlap(compute_s: float, comm_s: float, collectives: int, *, splits: int = 2) -> float:
    """The fraction of ``comm_s`` that Merak's sub-pipelined TP hides behind ``compute_s``.

    The micro-batch is cut into ``splits`` sub-batches; a compute stream and a communication stream
    run ``collectives`` rounds (one per all-reduce, each preceded by an equal share of compute):
    round ``k`` of a sub-batch computes once its round ``k-1`` all-reduce is done, and all-reduces
    once computed; each stream runs one thing at a time. The exposed time is the makespan minus the
    compute. Cross-block pipelining (``tp_overlapping_level`` 3) is assumed; contention between the
    two streams is not modelled, so this is an upper bound on what overlap achieves.
    """
    if comm_s <= 0 or collectives < 1:
        return 0.0
    c, a = compute_s / (collectives * splits), comm_s / (collectives * splits)
    comp_free = comm_free = 0.0
    ready = [0.0] * splits  # when each sub-batch's previous all-reduce finished
    for _ in range(collectives):
        for k in range(splits):
            comp_free = max(comp_free, ready[k]) + c
            comm_free = max(comm_free, comp_free) + a
            ready[k] = comm_free
    exposed = max(ready) - compute_s
    return min(1.0, max(0.0, 1.0 - exposed / comm_s))


def stage_costs(
    plans: Sequence[StagePlan], shards: Sequence[ShardCost], *, param_dtype_bytes: int = 2
) -> list[StageCost]:
    """Simulator costs of ``assign_stages`` plans over their shard costs (no tensor parallelism):
    a stage's input is what its previous shard sends, its output what its last shard sends."""
    out = []
    for k, plan in enumerate(plans):
        last = k == len(plans) - 1
        out.append(
            StageCost(
                forward_s=plan.forward_s,
                backward_s=plan.backward_s,
                recompute_ratio=plan.recompute_ratio,
                activation_bytes=plan.activation_bytes,
                input_bytes=shards[plan.first - 1].send_bytes if plan.first > 0 else 0,
                send_bytes=0 if last else shards[plan.last].send_bytes,
                params=plan.param_bytes // param_dtype_bytes,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Event:
    """One instruction as simulated on one stage."""

    stage: int
    op: str
    mb: int
    ckpt: str
    start: float
    end: float


@dataclass(frozen=True, kw_only=True, slots=True)
class SimResult:
    """A simulated step: every stage's events, its data-parallel all-reduce, busy and idle time,
    activation memory over time (``(time, bytes)`` after every change) and its peak."""

    kind: str
    microbatches: int
    events: tuple[tuple[Event, ...], ...]
    allreduce: tuple[tuple[float, float], ...]
    step_s: float
    busy_s: tuple[float, ...]
    activation_peak_bytes: tuple[int, ...]
    static_bytes: tuple[int, ...]
    peak_inflight: tuple[int, ...]
    memory: tuple[tuple[tuple[float, int], ...], ...] = field(repr=False)

    @property
    def stages(self) -> int:
        return len(self.events)

    @property
    def bubble(self) -> tuple[float, ...]:
        """Per stage, the share of the step not spent computing (waiting and communicating)."""
        return tuple(1.0 - b / self.step_s if self.step_s > 0 else 0.0 for b in self.busy_s)

    @property
    def bubble_overall(self) -> float:
        return 1.0 - sum(self.busy_s) / (self.stages * self.step_s) if self.step_s > 0 else 0.0

    @property
    def peak_bytes(self) -> tuple[int, ...]:
        return tuple(a + s for a, s in zip(self.activation_peak_bytes, self.static_bytes, strict=True))

    def to_dict(self, *, timeline: bool = True) -> dict:
        out = {
            "kind": self.kind,
            "microbatches": self.microbatches,
            "step_s": self.step_s,
            "busy_s": list(self.busy_s),
            "bubble": list(self.bubble),
            "bubble_overall": self.bubble_overall,
            "activation_peak_bytes": list(self.activation_peak_bytes),
            "static_bytes": list(self.static_bytes),
            "peak_bytes": list(self.peak_bytes),
            "peak_inflight": list(self.peak_inflight),
            "allreduce": [list(a) for a in self.allreduce],
        }
        if timeline:
            out["events"] = [[asdict(e) for e in evs] for evs in self.events]
        return out


def _durations(cost: StageCost, net: Network) -> tuple[float, float]:
    """Forward and backward seconds (no recompute) with the exposed tensor-parallel all-reduces."""
    comm = ring_allreduce_s(
        cost.tp_bytes, net.tp, net.tp_bandwidth, net.tp_latency, count=cost.tp_collectives
    )
    fwd = cost.forward_s + comm - min(net.tp_overlap * comm, cost.forward_s)
    bwd = cost.backward_s + comm - min(net.tp_overlap * comm, cost.backward_s)
    return fwd, bwd


def _memory(events: Sequence[Event], cost: StageCost) -> tuple[list[tuple[float, int]], int, int]:
    """Activation memory over time (frees before allocations at equal times), its peak, and the
    largest number of micro-batches between their F's start and their B's end."""
    act, inp, r = cost.activation_bytes, cost.input_bytes, cost.recompute_ratio
    kind = {e.mb: e.ckpt for e in events if e.op == "F"}
    deltas: list[tuple[float, int]] = []
    flight: list[tuple[float, int]] = []
    for e in events:
        ckpt = kind[e.mb]
        if e.op == "F":
            keep = {"none": act, "full": inp, "stage": int((1 - r) * act) + (inp if r > 0 else 0)}[ckpt]
            deltas.append((e.start, keep))
            flight.append((e.start, 1))
        elif e.op == "R":
            deltas.append((e.start, act))
        else:
            held = {"none": act, "full": inp + act, "stage": int((1 - r) * act) + (inp if r > 0 else 0)}[ckpt]
            transient = int(r * act) if ckpt == "stage" else 0  # the recomputed share, during the B
            deltas += [(e.start, transient), (e.end, -(held + transient))]
            flight.append((e.end, -1))
    timeline, level, peak = [], 0, 0
    for t, d in sorted(deltas, key=lambda x: (x[0], x[1])):
        level += d
        peak = max(peak, level)
        timeline.append((t, level))
    inflight = most = 0
    for _, d in sorted(flight):
        inflight += d
        most = max(most, inflight)
    return timeline, peak, most


def simulate(
    costs: Sequence[StageCost],
    kind: str,
    microbatches: int,
    *,
    network: Network | None = None,
    optimizer_shards: int = 1,
) -> SimResult:
    """Simulate one training step of ``kind`` with ``microbatches`` on stages costing ``costs``."""
    net = network or Network()
    p = len(costs)
    if p < 1:
        raise ConfigError("need at least one stage cost")
    if optimizer_shards < 1:
        raise ConfigError(f"optimizer_shards must be >= 1, got {optimizer_shards}")
    lists: list[list[Instr]] = [instructions(kind, s, p, microbatches) for s in range(p)]
    durs = [_durations(c, net) for c in costs]
    hop = [p2p_s(costs[s].send_bytes, net.boundary_bandwidth(s, p), net.p2p_latency) for s in range(p - 1)]
    fwd_arrival: list[dict[int, float]] = [{} for _ in range(p)]
    bwd_arrival: list[dict[int, float]] = [{} for _ in range(p)]
    link_down, link_up = [0.0] * p, [0.0] * p  # when each link is next free, per direction
    events: list[list[Event]] = [[] for _ in range(p)]
    ckpt: list[dict[int, str]] = [{} for _ in range(p)]
    free, pos = [0.0] * p, [0] * p
    progress = True
    while progress:
        progress = False
        for s in range(p):
            while pos[s] < len(lists[s]):
                ins = lists[s][pos[s]]
                ready = 0.0
                if ins.op == "F" and s > 0:
                    if ins.mb not in fwd_arrival[s]:
                        break
                    ready = fwd_arrival[s][ins.mb]
                elif ins.op == "B" and s < p - 1:
                    if ins.mb not in bwd_arrival[s]:
                        break
                    ready = bwd_arrival[s][ins.mb]
                fwd, bwd = durs[s]
                if ins.op == "F":
                    ckpt[s][ins.mb] = ins.ckpt
                    dur = fwd
                elif ins.op == "R":
                    dur = fwd
                else:
                    dur = bwd + (costs[s].recompute_ratio * fwd if ckpt[s][ins.mb] == "stage" else 0.0)
                start = max(free[s], ready)
                free[s] = end = start + dur
                events[s].append(Event(s, ins.op, ins.mb, ckpt[s].get(ins.mb, ins.ckpt), start, end))
                if ins.op == "F" and s < p - 1:
                    link_down[s] = fwd_arrival[s + 1][ins.mb] = max(end, link_down[s]) + hop[s]
                elif ins.op == "B" and s > 0:
                    link_up[s - 1] = bwd_arrival[s - 1][ins.mb] = max(end, link_up[s - 1]) + hop[s - 1]
                pos[s] += 1
                progress = True
    stuck = [f"stage {s} at {lists[s][pos[s]]}" for s in range(p) if pos[s] < len(lists[s])]
    if stuck:
        raise RuntimeError(f"{kind} deadlocks in simulation: {', '.join(stuck)}")
    grads = [
        ring_allreduce_s(c.params * GRAD_BYTES_PER_PARAM, net.dp, net.dp_bandwidth, net.dp_latency)
        for c in costs
    ]
    allreduce = tuple((free[s], free[s] + grads[s]) for s in range(p))
    memory = [_memory(events[s], costs[s]) for s in range(p)]
    return SimResult(
        kind=kind,
        microbatches=microbatches,
        events=tuple(tuple(evs) for evs in events),
        allreduce=allreduce,
        step_s=max(end for _, end in allreduce),
        busy_s=tuple(sum(e.end - e.start for e in evs) for evs in events),
        activation_peak_bytes=tuple(m[1] for m in memory),
        static_bytes=tuple(static_bytes(c.params, optimizer_shards=optimizer_shards) for c in costs),
        peak_inflight=tuple(m[2] for m in memory),
        memory=tuple(tuple(m[0]) for m in memory),
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class StageCalibration:
    """Measured and simulated compute seconds of one stage in one step."""

    stage: int
    measured_busy_s: float
    simulated_busy_s: float

    @property
    def error(self) -> float:
        """Relative error of the simulation, ``(simulated - measured) / measured``."""
        return (self.simulated_busy_s - self.measured_busy_s) / self.measured_busy_s

    def to_dict(self) -> dict:
        return {**asdict(self), "error": self.error}


@dataclass(frozen=True, kw_only=True, slots=True)
class Calibration:
    """A measured step against its simulation."""

    stages: tuple[StageCalibration, ...]
    measured_step_s: float
    simulated: SimResult

    @property
    def simulated_step_s(self) -> float:
        return self.simulated.step_s

    @property
    def step_error(self) -> float:
        return (self.simulated.step_s - self.measured_step_s) / self.measured_step_s

    def to_dict(self) -> dict:
        return {
            "measured_step_s": self.measured_step_s,
            "simulated_step_s": self.simulated_step_s,
            "step_error": self.step_error,
            "stages": [s.to_dict() for s in self.stages],
            "simulated": self.simulated.to_dict(timeline=False),
        }


def _check_traces(traces: Sequence[Sequence[TraceEvent]], stages: int) -> None:
    if len(traces) != stages:
        raise ConfigError(
            f"{len(traces)} traces for {stages} stages", hint="pass one trace per pipeline rank"
        )
    for s, trace in enumerate(traces):
        if not trace:
            raise ConfigError(f"the trace of stage {s} is empty", hint="record it after a train_step")


def costs_from_traces(
    traces: Sequence[Sequence[TraceEvent]], costs: Sequence[StageCost], kind: str, microbatches: int
) -> list[StageCost]:
    """``costs`` with each stage's forward and backward replaced by the medians measured in its trace
    (the recompute inside a ``"stage"`` backward subtracted; tensor-parallel traffic dropped, as the
    measured times include it), so the simulation tests the schedule model alone."""
    _check_traces(traces, len(costs))
    out = []
    for s, (trace, cost) in enumerate(zip(traces, costs, strict=True)):
        kinds = {i.mb: i.ckpt for i in instructions(kind, s, len(costs), microbatches) if i.op == "F"}
        fwd = statistics.median(e.end - e.start for e in trace if e.op == "F")
        bwds = [
            e.end - e.start - (cost.recompute_ratio * fwd if kinds.get(e.mb) == "stage" else 0.0)
            for e in trace
            if e.op == "B"
        ]
        bwd = max(0.0, statistics.median(bwds)) if bwds else cost.backward_s
        out.append(replace(cost, forward_s=fwd, backward_s=bwd, tp_bytes=0, tp_collectives=0))
    return out


def calibrate(
    traces: Sequence[Sequence[TraceEvent]],
    measured_step_s: float,
    costs: Sequence[StageCost],
    kind: str,
    microbatches: int,
    *,
    network: Network | None = None,
) -> Calibration:
    """Compare one measured step (``traces``: each pipeline rank's ``TraceEvent`` list, in stage
    order; ``measured_step_s``: its wall time) with the simulation of ``costs`` (predicted, measured
    per shard through :func:`stage_costs`, or taken from the traces by :func:`costs_from_traces`)."""
    _check_traces(traces, len(costs))
    if not measured_step_s > 0:
        raise ConfigError(f"the measured step time must be positive, got {measured_step_s}")
    sim = simulate(costs, kind, microbatches, network=network)
    rows = tuple(
        StageCalibration(
            stage=s, measured_busy_s=sum(e.end - e.start for e in trace), simulated_busy_s=sim.busy_s[s]
        )
        for s, trace in enumerate(traces)
    )
    return Calibration(stages=rows, measured_step_s=measured_step_s, simulated=sim)
