"""Pipeline schedules as per-stage instruction lists, shared by the runtime and the simulator.

An instruction is ``F`` (forward of a micro-batch), ``R`` (recompute a fully checkpointed forward
ahead of its backward) or ``B`` (backward). A forward's ``ckpt`` says what it keeps: ``"stage"``
the stage-aware share of recomputation (Merak's ratio for this stage; 0 keeps everything),
``"full"`` only the stage's inputs (recomputed by a later ``R``), ``"none"`` everything.

- ``gpipe``: all forwards, then all backwards.
- ``1f1b``: ``P - s`` warm-up forwards on stage ``s``, then one backward and one forward in turn.
- ``pre-recompute`` (Merak's ``pre_recompute_1f1b``): 1F1B; the cool-down forwards (micro-batch
  ``m`` with ``M - m + s < P``) keep only their inputs and are recomputed just before the stage
  waits for their gradient, off the critical path.
- ``last-no-recompute``: as above, but the last stage never recomputes and stage ``P-2`` fully
  checkpoints only its first forward, recomputed before its first backward.
- ``shifted-critical-path`` (Merak's ``full_critical_path_1f1b``, the paper's schedule): as above,
  and on stage ``P-2`` the third forward runs before the first backward, its first two forwards
  are fully checkpointed and recomputed ahead of their backwards; stage ``P-3`` does the same for its
  first forward. Needs at least 4 micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from effcore.errors import ConfigError

__all__ = ["SCHEDULES", "Instr", "instructions", "validate"]

SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b", "pre-recompute", "last-no-recompute", "shifted-critical-path")
Ckpt = Literal["stage", "full", "none"]


@dataclass(frozen=True, slots=True)
class Instr:
    op: Literal["F", "B", "R"]
    mb: int
    ckpt: Ckpt = "stage"

    def __str__(self) -> str:
        tag = {"stage": "", "full": "*", "none": "!"}[self.ckpt] if self.op == "F" else ""
        return f"{self.op}{self.mb}{tag}"


def _one_f_one_b(stage: int, stages: int, m: int) -> list[tuple[str, int]]:
    warmup = min(m, stages - stage)
    order = [("F", i) for i in range(warmup)]
    f, b = warmup, 0
    while b < m:
        order.append(("B", b))
        b += 1
        if f < m:
            order.append(("F", f))
            f += 1
    return order


def instructions(kind: str, stage: int, stages: int, microbatches: int) -> list[Instr]:
    """Stage ``stage``'s instruction list (0-indexed, of ``stages``) for ``microbatches``."""
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown schedule {kind!r}", hint=f"choose from {', '.join(SCHEDULES)}")
    if not 0 <= stage < stages:
        raise ConfigError(f"stage {stage} is not in 0..{stages - 1}")
    m, p, s = microbatches, stages, stage
    if m < 1:
        raise ConfigError(f"need at least one micro-batch, got {m}")
    if kind == "gpipe":
        return [Instr("F", i) for i in range(m)] + [Instr("B", i) for i in range(m)]
    if kind != "1f1b" and m < p:
        raise ConfigError(f"{kind} needs at least as many micro-batches as stages ({m} < {p})")
    if kind == "shifted-critical-path" and m < 4:
        raise ConfigError(f"shifted-critical-path needs at least 4 micro-batches, got {m}")
    order = _one_f_one_b(s, p, m)
    last = s == p - 1
    full: set[int] = set()  # forwards that keep only their inputs (recomputed by an R)
    if kind in ("pre-recompute", "last-no-recompute", "shifted-critical-path") and not last:
        if kind == "pre-recompute" or s < p - 2:
            full |= {i for i in range(m) if m - i + s < p}
        if kind != "pre-recompute" and s == p - 2:
            full.add(0)
        if kind == "shifted-critical-path" and s == p - 2:
            full.add(1)
        if kind == "shifted-critical-path" and s == p - 3:
            full.add(0)
    if kind == "shifted-critical-path" and s == p - 2:
        order.remove(("F", 2))
        order.insert(order.index(("B", 0)), ("F", 2))
    out: list[Instr] = []
    for op, i in order:
        if op == "F":
            out.append(
                Instr("F", i, "none" if (last and kind != "1f1b") else ("full" if i in full else "stage"))
            )
        else:
            if i in full:
                out.append(Instr("R", i))
            out.append(Instr("B", i))
    return out


def validate(kind: str, stages: int, microbatches: int) -> None:
    """Check every stage's list: each micro-batch forwarded once and backwarded once after its
    forward, an R only after a fully checkpointed forward and before its backward, and the whole
    pipeline free of deadlock (a stage can only run F(m) after F(m) upstream, B(m) after B(m)
    downstream). Raises AssertionError on the first violation."""
    lists = [instructions(kind, s, stages, microbatches) for s in range(stages)]
    for s, instrs in enumerate(lists):
        for op in ("F", "B"):  # sends and receives pair up in order between neighbours
            order = [i.mb for i in instrs if i.op == op]
            assert order == sorted(order), f"stage {s}: {op} out of micro-batch order"
        for op in ("F", "B"):
            assert sorted(i.mb for i in instrs if i.op == op) == list(range(microbatches)), (s, op)
        seen: dict[str, set[int]] = {"F": set(), "B": set(), "R": set()}
        full = {i.mb for i in instrs if i.op == "F" and i.ckpt == "full"}
        for instr in instrs:
            if instr.op == "B":
                assert instr.mb in seen["F"], f"stage {s}: B{instr.mb} before its forward"
                assert instr.mb not in full or instr.mb in seen["R"], f"stage {s}: B{instr.mb} before its R"
            if instr.op == "R":
                assert instr.mb in full and instr.mb in seen["F"], f"stage {s}: stray R{instr.mb}"
            seen[instr.op].add(instr.mb)
    pos = [0] * stages
    fwd = [set() for _ in range(stages)]
    bwd = [set() for _ in range(stages)]
    progress = True
    while progress:
        progress = False
        for s in range(stages):
            while pos[s] < len(lists[s]):
                instr = lists[s][pos[s]]
                ready = (
                    (instr.op == "F" and (s == 0 or instr.mb in fwd[s - 1]))
                    or (instr.op == "B" and (s == stages - 1 or instr.mb in bwd[s + 1]))
                    or instr.op == "R"
                )
                if not ready:
                    break
                if instr.op != "R":
                    (fwd if instr.op == "F" else bwd)[s].add(instr.mb)
                pos[s] += 1
                progress = True
    stuck = [s for s in range(stages) if pos[s] < len(lists[s])]
    assert not stuck, f"deadlock: stages {stuck} wait at {[str(lists[s][pos[s]]) for s in stuck]}"
