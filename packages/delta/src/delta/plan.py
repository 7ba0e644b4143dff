"""Plans from one profiled step: DELTA's filter and director, and the baselines' rules on the same trace."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from delta.simulate import Action, SimResult, simulate
from delta.trace import Slot, StepTrace
from effcore.errors import ConfigError

__all__ = ["BUDGETED", "POLICIES", "GroupCost", "Plan", "Policy", "fmt_bytes", "group_costs", "make_plan"]

Policy = Literal["delta", "capuchin", "dtr", "checkpoint", "offload", "none"]
POLICIES: tuple[str, ...] = get_args(Policy)
BUDGETED = ("delta", "capuchin", "dtr")  # the policies that release only what the budget needs


def fmt_bytes(n: float) -> str:
    """``1536`` -> ``'1.50 KiB'``: three significant digits in the largest binary unit below ``n``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


@dataclass(kw_only=True, slots=True)
class GroupCost:
    """One storage group (the slots sharing a storage): its size and the cost of each way to release it."""

    storage: int
    nbytes: int
    copy_nbytes: int  # host bytes a swap needs (one copy per slot)
    gap_s: float  # the longest idle time between a save and its use
    pack_s: float  # the first save
    swap_s: float  # transfer time not hidden behind compute (both directions)
    recompute_s: float  # compute to rerun its blocks up to where it is saved
    swappable: bool
    recomputable: str  # "" when it may be recomputed, else why not


def _transfer_s(slot: Slot, trace: StepTrace, bandwidth: float, prefetch: int | None, overlap: bool) -> float:
    t = slot.copy_nbytes / bandwidth
    if not overlap:  # CPU: copies are synchronous, nothing hides them
        return 2 * t
    fwd_window = max(0.0, trace.forward_s - slot.pack_s)  # the forward compute after the save
    bwd_per_block = (trace.step_s - trace.forward_s) / max(1, len(trace.blocks))
    bwd_window = (prefetch or 0) * bwd_per_block
    return max(0.0, t - fwd_window) + max(0.0, t - bwd_window)


def group_costs(trace: StepTrace, *, bandwidth: float, prefetch: int | None, overlap: bool, min_bytes: int,
                preserve_rng_state: bool = True) -> dict[int, GroupCost]:  # fmt: skip
    """Costs of every releasable storage group (inside blocks, at least ``min_bytes``)."""
    inputs = {sid for b in trace.blocks for sid, _ in b.inputs}
    out: dict[int, GroupCost] = {}
    for sid, slots in trace.group_slots().items():
        if any(s.block < 0 for s in slots) or slots[0].nbytes < min_bytes:
            continue
        why = ""
        for b in sorted({s.block for s in slots}):
            block = trace.blocks[b]
            if block.not_recomputable:
                why = f"block {block.name}: {block.not_recomputable}"
            elif block.random_ops and not preserve_rng_state:
                why = f"block {block.name} draws random numbers and its RNG state is not saved"
        if not why and sid in inputs:
            why = "it is a block's input (recomputing it would keep it)"
        per_block: dict[int, float] = {}
        for s in slots:
            per_block[s.block] = max(per_block.get(s.block, 0.0), s.prefix_s)
        out[sid] = GroupCost(
            storage=sid,
            nbytes=slots[0].nbytes,
            copy_nbytes=sum(s.copy_nbytes for s in slots),
            gap_s=max(s.gap_s for s in slots),
            pack_s=slots[0].pack_s,
            swap_s=sum(_transfer_s(s, trace, bandwidth, prefetch, overlap) for s in slots),
            recompute_s=sum(per_block.values()),
            swappable=True,
            recomputable=why,
        )
    return out


@dataclass(kw_only=True, slots=True)
class Plan:
    """Per storage group: keep, swap or recompute; with the projected peak and the floor of this policy."""

    policy: str
    budget: int | None
    actions: dict[int, Action]
    projected: SimResult
    minimum: int
    trace: StepTrace
    prefetch: int | None
    extra_s: float  # estimated time the plan adds to a step (exposed transfers + recompute)

    def summary(self) -> dict[str, int | float | str | None]:
        groups = self.trace.group_slots()
        out: dict[str, int | float | str | None] = {"policy": self.policy, "budget": self.budget}
        for action in ("keep", "swap", "recompute"):
            sids = [sid for sid in groups if self.actions.get(sid, "keep") == action]
            out[f"{action}_tensors"] = sum(len(groups[sid]) for sid in sids)
            out[f"{action}_bytes"] = sum(groups[sid][0].nbytes for sid in sids)
        out.update(projected_peak=self.projected.peak, minimum=self.minimum, static_bytes=self.trace.static_bytes,
                   saved_bytes=self.trace.saved_bytes(), extra_s=self.extra_s)  # fmt: skip
        return out


def _director(cost: GroupCost, host_left: float) -> Action | None:
    """DELTA's choice: swap when its exposed transfer costs no more than the recompute, else recompute."""
    can_swap = cost.swappable and cost.copy_nbytes <= host_left
    if can_swap and (cost.recomputable or cost.swap_s <= cost.recompute_s):
        return "swap"
    if not cost.recomputable:
        return "recompute"
    return "swap" if can_swap else None


def _rule(policy: str, cost: GroupCost, host_left: float) -> Action | None:
    if policy == "delta":
        return _director(cost, host_left)
    if policy in ("capuchin", "offload"):  # swap first; recompute only when the host is full
        if cost.swappable and cost.copy_nbytes <= host_left:
            return "swap"
        return None if cost.recomputable else "recompute"
    return None if cost.recomputable else "recompute"  # dtr, checkpoint: recompute only


def _score(policy: str, cost: GroupCost, peak_s: float) -> float:
    """Higher first. DELTA: big, long idle, cheap; Capuchin: longest free time; DTR: lowest c / (m * staleness)."""
    if policy == "delta":
        cheapest = min(cost.swap_s, cost.recompute_s if not cost.recomputable else cost.swap_s)
        return cost.nbytes * cost.gap_s / (1.0 + 1e3 * cheapest)
    if policy == "capuchin":
        return cost.gap_s
    staleness = max(peak_s - cost.pack_s, 1e-9)
    return -cost.recompute_s / (cost.nbytes * staleness)


def _extra_s(costs: dict[int, GroupCost], actions: dict[int, Action], trace: StepTrace) -> float:
    swap = sum(costs[sid].swap_s for sid, a in actions.items() if a == "swap")
    blocks: dict[int, float] = {}  # a block reruns once, up to its last needed save
    for s in trace.slots:
        if actions.get(s.storage) == "recompute":
            blocks[s.block] = max(blocks.get(s.block, 0.0), s.prefix_s)
    return swap + sum(blocks.values())


def _release_all(policy: str, costs: dict[int, GroupCost], host_bytes: float) -> dict[int, Action]:
    actions: dict[int, Action] = {}
    host_left = host_bytes
    for sid in sorted(costs, key=lambda s: -costs[s].nbytes):
        action = _rule(policy, costs[sid], host_left)
        if action is not None:
            actions[sid] = action
            host_left -= costs[sid].copy_nbytes if action == "swap" else 0
    return actions


def _unrecomputable(trace: StepTrace, costs: dict[int, GroupCost]) -> str:
    reasons = sorted({c.recomputable for c in costs.values() if c.recomputable.startswith("block ")})
    return f"; not recomputable: {'; '.join(reasons[:3])}" if reasons else ""


def make_plan(trace: StepTrace, policy: str, budget: int | None, *, bandwidth: float, prefetch: int | None,
              overlap: bool, min_bytes: int = 1024, preserve_rng_state: bool = True,
              max_host_bytes: int | None = None) -> Plan:  # fmt: skip
    """The plan ``policy`` makes for ``trace`` under ``budget`` (bytes of parameters, gradients and saved tensors)."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}", hint=f"choose from {', '.join(POLICIES)}")
    costs = group_costs(trace, bandwidth=bandwidth, prefetch=prefetch, overlap=overlap, min_bytes=min_bytes,
                        preserve_rng_state=preserve_rng_state)  # fmt: skip
    host = float("inf") if max_host_bytes is None else float(max_host_bytes)
    floor = {} if policy == "none" else _release_all(policy, costs, host)
    floor_sim = simulate(trace, floor, prefetch=prefetch)
    if (
        policy == "delta"
    ):  # all-swap can hold less than the director's mix (recompute brings a block back whole)
        swap_all = _release_all("capuchin", costs, host)
        swap_sim = simulate(trace, swap_all, prefetch=prefetch)
        if swap_sim.peak < floor_sim.peak:
            floor, floor_sim = swap_all, swap_sim
    if policy not in BUDGETED:
        actions = {} if policy == "none" else floor
        sim = simulate(trace, actions, prefetch=prefetch, record=True)
        return Plan(policy=policy, budget=budget, actions=actions, projected=sim, minimum=floor_sim.peak,
                    trace=trace, prefetch=prefetch, extra_s=_extra_s(costs, actions, trace))  # fmt: skip
    if budget is None:
        raise ConfigError(f"policy {policy!r} needs a memory budget", hint="pass budget=, e.g. --budget 4GiB")
    if budget < floor_sim.peak:
        raise ConfigError(
            f"budget {fmt_bytes(budget)} is below the minimum {fmt_bytes(floor_sim.peak)} this step needs with "
            f"policy {policy!r} (parameters and gradients {fmt_bytes(trace.static_bytes)}, plus what cannot be "
            f"released and one block's tensors brought back in backward){_unrecomputable(trace, costs)}",
            hint=f"raise the budget to at least {floor_sim.peak} bytes, or lower the batch",
        )
    actions: dict[int, Action] = {}
    sim = simulate(trace, actions, prefetch=prefetch)
    host_left, tried = host, set()
    pack_s = {n: trace.slots[i].pack_s for n, (kind, i) in enumerate(trace.events) if kind == "pack"}
    while sim.peak > budget:
        peak_s = max((t for n, t in pack_s.items() if n <= sim.peak_event), default=0.0)
        resident = {key[1] for key in sim.resident_at_peak if key[0] == "D"}
        cands = [costs[sid] for sid in resident if sid in costs and sid not in actions and sid not in tried]
        if not cands:
            break
        cost = max(cands, key=lambda c: _score(policy, c, peak_s))
        tried.add(cost.storage)
        action = _rule(policy, cost, host_left)
        if action is None:
            continue
        trial = simulate(trace, {**actions, cost.storage: action}, prefetch=prefetch)
        if trial.peak <= sim.peak:
            actions[cost.storage], sim = action, trial
            host_left -= cost.copy_nbytes if action == "swap" else 0
    if sim.peak > budget:  # the greedy filter got stuck: release everything (the floor fits, checked above)
        actions = floor
    sim = simulate(trace, actions, prefetch=prefetch, record=True)
    return Plan(policy=policy, budget=budget, actions=actions, projected=sim, minimum=floor_sim.peak,
                trace=trace, prefetch=prefetch, extra_s=_extra_s(costs, actions, trace))  # fmt: skip
