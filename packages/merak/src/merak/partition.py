"""Assign Merak's shards to pipeline stages: equal counts, balanced parameters, or the optimal time DP.

Every method keeps stages contiguous and non-empty. ``method="time"`` solves, exactly, the
min-max partition the authors' experimental ``autopipe`` approximates: minimise the slowest stage's
predicted time, where a stage costs its shards' forward and backward time, the forward it
recomputes under Merak's stage-aware ratio, and sending its output to the next stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

from effcore.errors import ConfigError

__all__ = [
    "METHODS",
    "ShardCost",
    "StagePlan",
    "assign_stages",
    "min_max_partition",
    "stage_recompute_ratios",
]

Method = Literal["uniform", "parameters", "time"]
METHODS: tuple[str, ...] = ("uniform", "parameters", "time")


@dataclass(frozen=True, kw_only=True, slots=True)
class ShardCost:
    """What one shard costs: seconds forward/backward per micro-batch, parameter bytes, activation
    bytes it keeps for backward, and the bytes it sends when it ends a stage."""

    forward_s: float
    backward_s: float
    param_bytes: int
    activation_bytes: int
    send_bytes: int


@dataclass(frozen=True, kw_only=True, slots=True)
class StagePlan:
    """Stage ``index`` runs shards ``[first, last]``; predicted seconds per micro-batch and bytes."""

    index: int
    first: int
    last: int
    forward_s: float
    backward_s: float
    recompute_s: float
    send_s: float
    recompute_ratio: float
    param_bytes: int
    activation_bytes: int

    @property
    def time_s(self) -> float:
        return self.forward_s + self.backward_s + self.recompute_s + self.send_s

    def to_dict(self) -> dict:
        return {**asdict(self), "time_s": self.time_s}


def stage_recompute_ratios(
    stages: int, first_ratio: float | None, *, schedule: str | None = None
) -> list[float]:
    """Merak's stage-aware recomputation: stage s (1-indexed, s < P) checkpoints the fraction
    ``1 - (1 - r0)(P - 1)/(P - s)`` of its layers, clipped at 0; the last stage none. Under the
    shifted critical path stage P-1 takes stage P-2's ratio, as the authors' engine sets it (that
    stage holds one more micro-batch in flight).

    ``first_ratio=None`` disables recomputation (all zeros); a sequence gives every stage's ratio
    itself (``[1.0] * P``: recompute everything, as Megatron and DeepSpeed do).
    """
    if stages < 1:
        raise ConfigError(f"need at least one stage, got {stages}")
    if first_ratio is None:
        return [0.0] * stages
    if not isinstance(first_ratio, int | float):
        ratios = [float(r) for r in first_ratio]
        if len(ratios) != stages or not all(0.0 <= r <= 1.0 for r in ratios):
            raise ConfigError(f"per-stage recompute ratios must be {stages} values in [0, 1], got {ratios}")
        return ratios
    if not 0.0 <= first_ratio <= 1.0:
        raise ConfigError(f"the recompute ratio must be in [0, 1], got {first_ratio}")
    ratios = [max(0.0, 1 - (1 - first_ratio) * (stages - 1) / (stages - s)) for s in range(1, stages)]
    ratios.append(0.0)
    if schedule == "shifted-critical-path" and stages >= 3:
        ratios[-2] = ratios[-3]
    return ratios


def min_max_partition(n: int, parts: int, cost: Callable[[int, int, int], float]) -> list[tuple[int, int]]:
    """Split items ``0..n-1`` into ``parts`` contiguous non-empty runs minimising the largest
    ``cost(part, first, last)``; exact dynamic programme, O(n^2 parts). Ties keep earlier cuts."""
    if parts < 1 or parts > n:
        raise ConfigError(
            f"cannot split {n} shards into {parts} stages", hint="use fewer stages or more shards"
        )
    inf = float("inf")
    # best[p][j]: the smallest max-cost of splitting items 0..j-1 into p runs
    best = [[inf] * (n + 1) for _ in range(parts + 1)]
    cut = [[0] * (n + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for p in range(1, parts + 1):
        for j in range(p, n - (parts - p) + 1):
            for i in range(p - 1, j):
                value = max(best[p - 1][i], cost(p - 1, i, j - 1))
                if value < best[p][j]:
                    best[p][j], cut[p][j] = value, i
    runs, j = [], n
    for p in range(parts, 0, -1):
        i = cut[p][j]
        runs.append((i, j - 1))
        j = i
    return runs[::-1]


def assign_stages(
    costs: Sequence[ShardCost],
    stages: int,
    *,
    method: Method = "time",
    recompute_ratio: float | Sequence[float] | None = None,
    schedule: str | None = None,
    bandwidth: float = 1e10,
) -> list[StagePlan]:
    """Stage plans for ``costs`` (one per shard, in order) on ``stages`` pipeline stages.

    ``uniform`` gives each stage the same number of shards (the remainder to the last stages, as
    Merak's ``uniform_floor``); ``parameters`` balances parameter bytes (Merak's ``parameters``);
    ``time`` minimises the slowest stage's predicted time. ``bandwidth`` (bytes/s) prices the sends;
    ``schedule`` adjusts the recompute ratios (see :func:`stage_recompute_ratios`).
    """
    if method not in METHODS:
        raise ConfigError(f"unknown partition method {method!r}", hint=f"choose from {', '.join(METHODS)}")
    if bandwidth <= 0:
        raise ConfigError(f"bandwidth must be positive, got {bandwidth}")
    n = len(costs)
    ratios = stage_recompute_ratios(stages, recompute_ratio, schedule=schedule)

    def plan(s: int, i: int, j: int) -> StagePlan:
        run = costs[i : j + 1]
        fwd = sum(c.forward_s for c in run)
        return StagePlan(
            index=s,
            first=i,
            last=j,
            forward_s=fwd,
            backward_s=sum(c.backward_s for c in run),
            recompute_s=ratios[s] * fwd,
            send_s=0.0 if s == stages - 1 else costs[j].send_bytes / bandwidth,
            recompute_ratio=ratios[s],
            param_bytes=sum(c.param_bytes for c in run),
            activation_bytes=sum(c.activation_bytes for c in run),
        )

    if method == "uniform":
        if stages > n:
            raise ConfigError(f"cannot split {n} shards into {stages} stages", hint="use fewer stages")
        base, extra = divmod(n, stages)
        sizes = [base + (1 if s >= stages - extra else 0) for s in range(stages)]
        starts = [sum(sizes[:s]) for s in range(stages)]
        runs = [(a, a + k - 1) for a, k in zip(starts, sizes, strict=True)]
    elif method == "parameters":
        runs = min_max_partition(
            n, stages, lambda s, i, j: float(sum(c.param_bytes for c in costs[i : j + 1]))
        )
    else:
        runs = min_max_partition(n, stages, lambda s, i, j: plan(s, i, j).time_s)
    return [plan(s, i, j) for s, (i, j) in enumerate(runs)]
