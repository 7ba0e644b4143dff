"""Replay a profiled step's events under per-storage actions: the device bytes held at every event.

The runtime (:mod:`delta.runtime`) holds and releases at exactly these events, so the projected peak
is what its meter measures. What is counted: parameters and gradients (``static_bytes``), kept saved
tensors until autograd frees them, swapped tensors from their load (or prefetch) to their free,
recomputed tensors from their block's recompute to their free, and the input of every block that
will be recomputed from its forward to its recompute. Forward temporaries that nothing saves and
backward's own workspace are not counted (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from delta.trace import StepTrace
from effcore.memory import ResidencyMeter

__all__ = ["Action", "SimResult", "simulate"]

Action = Literal["keep", "swap", "recompute"]


@dataclass(kw_only=True, slots=True)
class SimResult:
    """Projected device bytes: the peak, where it happens, what is resident then, the whole trace."""

    peak: int
    peak_event: int
    resident_at_peak: list[tuple]  # meter keys: ("D", storage), ("L", slot) or ("R", block, storage)
    timeline: list[dict[str, int]]  # bytes by category after each event
    static_bytes: int


def simulate(
    trace: StepTrace, actions: dict[int, Action], *, prefetch: int | None = None, record: bool = False
) -> SimResult:
    """Device bytes over ``trace`` when each storage group takes its action (absent: keep).

    ``prefetch``: None loads a swapped tensor when backward reads it; k >= 0 loads every swapped
    tensor of blocks b-k..b when backward first reads a tensor of block b.
    """
    slots, blocks = trace.slots, trace.blocks
    act = [actions.get(s.storage, "keep") for s in slots]
    by_block: dict[int, list[int]] = {}
    for s in slots:
        by_block.setdefault(s.block, []).append(s.index)
    recompute_blocks = {s.block for s in slots if act[s.index] == "recompute"}
    meter = ResidencyMeter(base=trace.static_bytes)
    held: dict[int, tuple] = {}  # slot -> the key it holds
    freed: set[int] = set()
    started: set[int] = set()  # blocks whose backward began (prefetch issued)
    recomputed: set[int] = set()
    best, best_event, best_keys = meter.live, -1, []
    timeline: list[dict[str, int]] = []

    def hold(i: int, key: tuple, category: str, nbytes: int) -> None:
        held[i] = key
        meter.hold(key, nbytes, category)

    def load(i: int) -> None:
        # One host copy per slot: each comes back as its own device tensor.
        if i not in held and i not in freed:
            hold(i, ("L", i), "swapped", slots[i].copy_nbytes)

    for n, (kind, i) in enumerate(trace.events):
        if kind == "enter":
            if i in recompute_blocks:
                for sid, nbytes in blocks[i].inputs:
                    meter.hold(("D", sid), nbytes, "inputs")
        elif kind == "pack":
            if act[i] == "keep":
                hold(i, ("D", slots[i].storage), "kept", slots[i].nbytes)
        elif kind == "unpack":
            b = slots[i].block
            if prefetch is not None and b >= 0 and b not in started:
                started.add(b)
                for bb in range(max(0, b - prefetch), b + 1):
                    for j in by_block.get(bb, ()):
                        if act[j] == "swap":
                            load(j)
            if act[i] == "swap":
                load(i)
            elif act[i] == "recompute" and b not in recomputed:
                recomputed.add(b)
                for j in by_block[b]:
                    if act[j] == "recompute" and j not in freed:
                        hold(j, ("R", b, slots[j].storage), "recomputed", slots[j].nbytes)
                for sid, nbytes in blocks[b].inputs:
                    meter.release(("D", sid), nbytes)
        else:  # free
            freed.add(i)
            key = held.pop(i, None)
            if key is not None:
                meter.release(key, slots[i].copy_nbytes if key[0] == "L" else slots[i].nbytes)
        if meter.live > best:
            best, best_event, best_keys = meter.live, n, meter.resident()
        if record:
            timeline.append(dict(meter.by_category))
    return SimResult(
        peak=best,
        peak_event=best_event,
        resident_at_peak=best_keys,
        timeline=timeline,
        static_bytes=trace.static_bytes,
    )
