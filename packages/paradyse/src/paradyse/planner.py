"""Plan one strategy per layer for a sequence: the paper's heuristic, exactly, and a better planner.

Both read a :class:`CostTable`: per strategy, the per-layer time (fitted model), the per-layer saved
activations and the transient peak (analytic memory model), plus the model states, at one length.

:func:`paradyse_plan` is ``heuristic_policy.select_method`` [from code]: strategies sorted fastest
first, dominated ones dropped, the fastest pure plan if it fits, else prefix/suffix mixes of two
(greedy over the split), 5 % hysteresis, and a *sticky* METP fallback.

:class:`Planner` (ours) fixes the weaknesses the notes list: the exact optimum over every mix of up
to three strategies (layers are identical, so a plan is a count per strategy; the LP optimum mixes
at most two, a third can absorb the integer rounding), a switching cost per boundary in the
objective, a fallback that is chosen per sequence (never sticky), and an error naming the memory
needed when even the leanest plan does not fit. Its hysteresis is off by default (0): every sequence
gets its optimum, so it is never slower than a static strategy that fits (by the cost model); the
paper's 5 % is ``hysteresis=0.05``. Plans are not cached: planning takes ~85 us per sequence
(``benchmarks/bench_planner.py``), under 0.2 % of the shortest step simulated here.

Both planners plan against ``cap - margin``: ``margin`` is memory kept free for what the model does
not count (the authors keep 512 MB on GPUs for the allocator and the CUDA context).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from paradyse.config import STRATEGIES, ModelConfig, PlanError
from paradyse.costmodel import TimeModel
from paradyse.memory_model import activation_bytes, state_bytes, transient_bytes

__all__ = ["CostTable", "HeuristicState", "Plan", "Planner", "compress", "paradyse_plan"]

GiB = 2**30


@dataclass(frozen=True, kw_only=True, slots=True)
class CostTable:
    """Costs at one sequence length: per strategy ``time`` (s/layer), ``act`` and ``transient`` (bytes)."""

    seq_len: int
    layers: int
    time: Mapping[str, float]
    act: Mapping[str, int]
    transient: Mapping[str, int]
    states: int

    @classmethod
    def build(
        cls, cfg: ModelConfig, p: int, seq_len: int, models: Mapping[str, TimeModel], *, batch: int = 1,
        strategies: Sequence[str] = STRATEGIES, extra_bytes: int = 0,
    ) -> CostTable:  # fmt: skip
        """The table at ``seq_len``; ``extra_bytes`` is memory outside the block stack (e.g. the
        language model's embedding and logits, :func:`paradyse.memory_model.lm_bytes`)."""
        names = [k for k in strategies if k in models]
        if not names:
            raise PlanError("no time model for any strategy", hint="profile the strategies first")
        return cls(
            seq_len=seq_len, layers=cfg.layers,
            time={k: float(models[k].predict(seq_len)) for k in names},
            act={k: activation_bytes(cfg, k, seq_len, p, batch=batch) for k in names},
            transient={k: transient_bytes(cfg, k, seq_len, p, batch=batch) for k in names},
            states=state_bytes(cfg, p) + extra_bytes,
        )  # fmt: skip

    def memory(self, plan: Sequence[str]) -> int:
        return self.states + sum(self.act[k] for k in plan) + max(self.transient[k] for k in set(plan))

    def seconds(self, plan: Sequence[str], switch_cost: float = 0.0) -> float:
        boundaries = sum(a != b for a, b in itertools.pairwise(plan))
        return sum(self.time[k] for k in plan) + switch_cost * boundaries


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """A plan with its predicted time and memory and how it was chosen."""

    layers: tuple[str, ...]
    seconds: float
    memory: int
    reason: str

    def __str__(self) -> str:
        return compress(self.layers)


def compress(plan: Sequence[str]) -> str:
    """``['megatron', 'megatron', 'metp']`` -> ``'megatron x2 + metp x1'``."""
    runs = [(k, len(list(g))) for k, g in itertools.groupby(plan)]
    return " + ".join(f"{k} x{n}" for k, n in runs)


# ------------------------------------------------------------------------ the paper's heuristic


@dataclass(kw_only=True, slots=True)
class HeuristicState:
    """What ``select_method`` carries across sequences: the previous plan, the cache, the OOM flag."""

    prev: tuple[str, ...] | None = None
    oom_flag: bool = False
    cache: dict[tuple[int, int], tuple[str, ...]] = field(default_factory=dict)


def paradyse_plan(
    table: CostTable, cap: int, state: HeuristicState, *, batch: int = 1, margin: int = 0,
    hysteresis: float = 0.05, fallback: str = "metp",
) -> Plan:  # fmt: skip
    """ParaDySe's ``select_method``, step for step (fits: total memory below ``cap - margin``).

    Strategies are ordered by per-layer time and total memory; one that is slower and not lighter
    (total memory of its pure plan, as the authors' fitted ``M_k``) than a faster one is dropped.
    ``fallback`` is METP; when the table has no METP the lightest strategy stands in for it.
    """
    L = table.layers
    pure = {k: table.memory((k,) * L) for k in table.time}
    if fallback not in table.time:
        fallback = min(pure, key=lambda k: pure[k])

    def fits(plan: Sequence[str]) -> bool:
        return table.memory(plan) < cap - margin

    def done(plan: Sequence[str], reason: str) -> Plan:
        plan = tuple(plan)
        prev = state.prev
        if (
            prev is not None
            and len(prev) == L
            and fits(prev)
            and table.seconds(prev) < (1 + hysteresis) * table.seconds(plan)
        ):
            plan, reason = prev, reason + f"; kept the previous plan (within {hysteresis:.0%})"
        state.prev = plan
        state.cache[(batch, table.seq_len)] = plan
        return Plan(layers=plan, seconds=table.seconds(plan), memory=table.memory(plan), reason=reason)

    order = sorted(table.time, key=lambda k: (table.time[k], pure[k]))
    kept: list[str] = []
    for k in order:  # pop_useless: a slower strategy must be lighter than every faster one
        if not kept or pure[k] < pure[kept[-1]]:
            kept.append(k)
    key = (batch, table.seq_len)
    if key in state.cache:
        plan = state.cache[key]
        return Plan(layers=plan, seconds=table.seconds(plan), memory=table.memory(plan), reason="cached")
    if state.oom_flag:
        plan = (fallback,) * L
        return Plan(layers=plan, seconds=table.seconds(plan), memory=table.memory(plan),
                    reason="sticky fallback (an earlier sequence needed it)")  # fmt: skip
    options: list[tuple[str, ...]] = []
    for i, ki in enumerate(kept):
        pure = (ki,) * L
        if fits(pure) and i == 0:
            return done(pure, "fastest strategy fits")
        if fits(pure):
            options.append(pure)
            continue
        for kj in kept[i + 1 :]:
            if not fits((kj,) * L):
                continue
            for x in range(1, L):
                mix = (ki,) * x + (kj,) * (L - x)
                if fits(mix):
                    options.append(mix)
                else:
                    break
    if options:
        return done(min(options, key=table.seconds), "fastest fitting option")
    state.oom_flag = True
    plan = (fallback,) * L
    return Plan(
        layers=plan, seconds=table.seconds(plan), memory=table.memory(plan), reason="fallback (nothing fits)"
    )


# ------------------------------------------------------------------------------- our planner


def _compositions(total: int, parts: int) -> np.ndarray:
    """Every way of writing ``total`` as ``parts`` non-negative counts, shape [n, parts]."""
    if parts == 1:
        return np.array([[total]], dtype=np.int64)
    rows = [c for c in itertools.product(range(total + 1), repeat=parts - 1) if sum(c) <= total]
    arr = np.array(rows, dtype=np.int64).reshape(-1, parts - 1)
    return np.concatenate([arr, total - arr.sum(axis=1, keepdims=True)], axis=1)


@dataclass(kw_only=True, slots=True)
class Planner:
    """Exact plans over mixes of up to ``max_mix`` strategies, with switching costs and hysteresis.

    ``cap``: memory per rank (bytes), of which ``margin`` is kept free; ``switch_cost``: seconds
    per boundary between strategies; ``hysteresis``: keep the previous sequence's plan while it fits
    and is within this fraction of the optimum (0: always the optimum); ``strict``: keep it only
    while it is also no slower than every static strategy that fits, so that the plan is never
    slower than a static one (the optimum never is: every static plan is one of its candidates).
    """

    cap: int
    layers: int
    margin: int = 0
    switch_cost: float = 0.0
    hysteresis: float = 0.0
    strict: bool = False
    max_mix: int = 3
    prev: tuple[str, ...] | None = None
    _comps: dict[int, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("margin", "switch_cost", "hysteresis"):
            if getattr(self, name) < 0:
                raise PlanError(f"Planner.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.strict and not self.hysteresis:
            raise PlanError(
                "Planner.strict applies with a hysteresis > 0 only (without one every plan is the optimum)"
            )
        if self.max_mix < 1:
            raise PlanError(f"Planner.max_mix must be >= 1, got {self.max_mix!r}")

    def _grid(self, parts: int) -> np.ndarray:
        # counts with every one of `parts` strategies used at least once, summing to `layers`
        if parts not in self._comps:
            self._comps[parts] = _compositions(self.layers - parts, parts) + 1
        return self._comps[parts]

    def plan(self, table: CostTable) -> Plan:
        """The fastest plan that fits ``cap`` (ties: fewer boundaries); raises when none fits."""
        names = sorted(table.time, key=lambda k: table.time[k])
        best: tuple[float, int, tuple[str, ...]] | None = None
        limit = self.cap - self.margin
        budget = limit - table.states
        for size in range(1, min(self.max_mix, len(names), self.layers) + 1):
            counts = self._grid(size)
            for combo in itertools.combinations(names, size):
                t = np.array([table.time[k] for k in combo])
                a = np.array([table.act[k] for k in combo], dtype=np.float64)
                tr = np.array([table.transient[k] for k in combo], dtype=np.float64)
                mem = counts @ a + tr.max()
                ok = mem <= budget
                if not ok.any():
                    continue
                secs = counts @ t + self.switch_cost * (size - 1)
                idx = int(np.argmin(np.where(ok, secs, np.inf)))
                cand = (float(secs[idx]), size, tuple(k for k, n in zip(combo, counts[idx], strict=True)
                                                      for _ in range(int(n))))  # fmt: skip
                if best is None or cand[:2] < best[:2]:
                    best = cand
        if best is None:
            lean = min(names, key=lambda k: table.act[k] * self.layers + table.transient[k])
            need = table.memory((lean,) * self.layers)
            raise PlanError(
                f"a sequence of {table.seq_len} tokens needs {need / GiB:.2f} GiB per rank even with the "
                f"leanest plan ({lean} on every layer); the cap is {self.cap / GiB:.2f} GiB"
                + (f" less a {self.margin / GiB:.2f} GiB margin" if self.margin else ""),
                hint="raise the memory cap, use more ranks, or shorten the sequence",
            )
        secs, _, layers = best
        plan = Plan(layers=layers, seconds=secs, memory=table.memory(layers), reason="optimal")
        prev = self.prev
        if self.hysteresis > 0 and prev is not None and prev != layers and table.memory(prev) <= limit:
            prev_secs = table.seconds(prev, self.switch_cost)
            keep = prev_secs < (1 + self.hysteresis) * secs
            if keep and self.strict:  # and no slower than the fastest static strategy that fits
                pure = [(k,) * self.layers for k in names]
                keep = prev_secs <= min(
                    (table.seconds(q) for q in pure if table.memory(q) <= limit), default=math.inf
                )
            if keep:
                plan = Plan(layers=prev, seconds=prev_secs, memory=table.memory(prev),
                            reason="kept the previous plan (within the hysteresis)")  # fmt: skip
        self.prev = plan.layers
        return plan
