"""One harness for every method: the largest batch under a budget and the time per sample at that batch."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from delta.api import Delta
from delta.models import ModelCase
from delta.plan import BUDGETED, POLICIES, make_plan
from delta.trace import StepTrace
from effcore.errors import ConfigError

__all__ = [
    "TORCH_METHODS",
    "MethodResult",
    "find_max_batches",
    "profile_trace",
    "run_maxbatch",
    "time_methods",
    "torch_step",
]

# torch's own implementations of three baselines, timed beside delta's policies (memory: see the README).
TORCH_METHODS = ("torch-checkpoint", "torch-save-on-cpu", "torch-sac")


@dataclass(kw_only=True, slots=True)
class MethodResult:
    """One method under one budget: its largest batch, what it holds there, and its time per sample."""

    method: str
    max_batch: int  # 0: not even the smallest batch tried fits
    peak_bytes: int | None  # delta's meter at max_batch (projected = measured)
    seconds_per_sample: float | None  # at max_batch, wall clock
    cpu_seconds_per_sample: float | None = None  # at max_batch, this process's CPU time (all threads)
    common_batch: int = 0  # the batch every method is also timed at (where the budget binds)
    common_seconds_per_sample: float | None = None
    common_cpu_seconds_per_sample: float | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _step_fn(case: ModelCase) -> Callable[..., torch.Tensor]:
    def fn(*batch: torch.Tensor) -> torch.Tensor:
        loss = case.loss(case.model, *batch)
        loss.backward()
        return loss.detach()

    return fn


def profile_trace(
    case: ModelCase, batch: int, *, seed: int = 0, device: torch.device | None = None
) -> StepTrace:
    """One profiled step at ``batch`` (every block tensor swapped, as the runtime profiles)."""
    gen = torch.Generator().manual_seed(seed)
    runner = Delta(case.model, policy="offload", blocks=case.blocks, device=device, bandwidth=1.0)
    plan = runner.plan_for(_step_fn(case), *case.make_batch(batch, gen))
    case.model.zero_grad(set_to_none=True)
    return plan.trace


def _fits(trace: StepTrace, policy: str, budget: int, bandwidth: float, overlap: bool) -> tuple[bool, int]:
    try:
        plan = make_plan(trace, policy, budget, bandwidth=bandwidth, prefetch=None, overlap=overlap)
    except ConfigError:
        return False, 0
    return plan.projected.peak <= budget, plan.projected.peak


def find_max_batches(case: ModelCase, budget: int, batches: Sequence[int], *, policies: Sequence[str] = POLICIES,
                     bandwidth: float, device: torch.device | None = None,
                     progress: Callable[[int], None] | None = None) -> dict[str, tuple[int, int | None]]:  # fmt: skip
    """For each policy, the largest of ``batches`` whose plan fits ``budget``; one profiled step per batch
    serves every policy (the trace does not depend on the policy). Stops once no policy fits."""
    best: dict[str, tuple[int, int | None]] = {p: (0, None) for p in policies}
    overlap = device is not None and device.type == "cuda"
    for batch in sorted(batches):
        trace = profile_trace(case, batch, device=device)
        any_fit = False
        for policy in policies:
            fits, peak = _fits(trace, policy, budget, bandwidth, overlap)
            if fits:
                best[policy] = (batch, peak)
                any_fit = True
        if progress is not None:
            progress(batch)
        if not any_fit:
            break
    return best


def torch_step(case: ModelCase, method: str, blocks: list[nn.Module]) -> Callable[..., torch.Tensor]:
    """A training step using torch's own implementation of a baseline."""
    from torch.utils.checkpoint import checkpoint

    if method == "torch-checkpoint":
        originals = [b.forward for b in blocks]

        def fn(*batch: torch.Tensor) -> torch.Tensor:
            for block, forward in zip(blocks, originals, strict=True):
                block.forward = lambda *a, _f=forward, **k: checkpoint(_f, *a, use_reentrant=False, **k)
            try:
                return _step_fn(case)(*batch)
            finally:
                for block in blocks:
                    del block.forward

        return fn
    if method == "torch-save-on-cpu":

        def fn(*batch: torch.Tensor) -> torch.Tensor:
            with torch.autograd.graph.save_on_cpu(pin_memory=torch.cuda.is_available()):
                return _step_fn(case)(*batch)

        return fn
    if method == "torch-sac":
        import torch._functorch.config as functorch_config

        compiled = torch.compile(case.model)

        def fn(*batch: torch.Tensor) -> torch.Tensor:
            with functorch_config.patch(activation_memory_budget=0.5):
                loss = case.loss(compiled, *batch)
                loss.backward()
            return loss.detach()

        return fn
    raise ConfigError(f"unknown torch method {method!r}", hint=f"choose from {', '.join(TORCH_METHODS)}")


def _method_step(case: ModelCase, method: str, data: tuple, *, budget: int | None, bandwidth: float | None,
                 device: torch.device | None) -> Callable[[], object]:  # fmt: skip
    if method in POLICIES:
        runner = Delta(case.model, policy=method, budget=budget if method in BUDGETED else None,
                       blocks=case.blocks, device=device, bandwidth=bandwidth)  # fmt: skip
        return lambda: runner.step(_step_fn(case), *data)
    fn = torch_step(case, method, Delta(case.model, policy="none", blocks=case.blocks).blocks)
    return lambda: fn(*data)


def time_methods(case: ModelCase, methods: Sequence[str], batch: int, *, budget: int | None, rounds: int = 3,
                 seed: int = 0, bandwidth: float | None = None,
                 device: torch.device | None = None) -> dict[str, tuple[float, float]]:  # fmt: skip
    """Median (wall, CPU) seconds per sample of each method at ``batch``: one untimed step each (delta's
    policies profile and plan in it, torch-sac compiles), then ``rounds`` rounds of one timed step per
    method, interleaved so that a change in the machine's load hits every method alike. CPU time (this
    process, all threads) is what other jobs on a shared machine disturb least."""
    if rounds < 1:
        raise ConfigError(f"rounds must be at least 1, got {rounds}")
    data = case.make_batch(batch, torch.Generator().manual_seed(seed))
    steps = {
        m: _method_step(case, m, data, budget=budget, bandwidth=bandwidth, device=device) for m in methods
    }
    times: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
    for r in range(rounds + 1):
        for method, step in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            if r:
                times[method].append((time.perf_counter() - t0, time.process_time() - c0))
            case.model.zero_grad(set_to_none=True)
    return {m: (statistics.median(w for w, _ in ts) / batch, statistics.median(c for _, c in ts) / batch)
            for m, ts in times.items()}  # fmt: skip


def run_maxbatch(case: ModelCase, budget: int, batches: Sequence[int], *, methods: Sequence[str], rounds: int = 3,
                 bandwidth: float, device: torch.device | None = None,
                 progress: Callable[[str], None] | None = None) -> list[MethodResult]:  # fmt: skip
    """Every method's largest batch under ``budget`` and its time per sample there (one timed step), side
    by side; and every method timed at a common batch (the smallest max batch of the methods other than
    ``none``, so that the budget binds for all of them), interleaved over ``rounds``, where the ratio to
    ``none`` (the same batch with nothing released, over the budget) is its time overhead.

    delta's policies get their batch from the plans (projected peak = what the runtime meter measures);
    torch's own methods are timed at the batch of the delta policy that does the same thing
    (torch-checkpoint: checkpoint, torch-save-on-cpu: offload): their memory is not seen by delta's meter.
    """
    unknown = [m for m in methods if m not in POLICIES and m not in TORCH_METHODS]
    if unknown:
        raise ConfigError(
            f"unknown methods {unknown}", hint=f"choose from {', '.join((*POLICIES, *TORCH_METHODS))}"
        )
    policies = [m for m in methods if m in POLICIES]
    twins = {"torch-checkpoint": "checkpoint", "torch-save-on-cpu": "offload", "torch-sac": "checkpoint"}
    needed = sorted({*policies, *(twins[m] for m in methods if m in TORCH_METHODS)}, key=POLICIES.index)
    best = find_max_batches(case, budget, batches, policies=needed, bandwidth=bandwidth, device=device,
                            progress=None if progress is None else lambda b: progress(f"profiled batch {b}"))  # fmt: skip
    fitting = [best[twins.get(m, m)][0] for m in methods if m != "none" and best[twins.get(m, m)][0]]
    common = min(fitting, default=0)
    overhead: dict[str, tuple[float, float]] = {}
    if common:
        if progress is not None:
            progress(f"timing every method at the common batch {common}")
        overhead = time_methods(case, methods, common, budget=budget, rounds=rounds, bandwidth=bandwidth,
                                device=device)  # fmt: skip
    rows = []
    for method in methods:
        batch, peak = best[twins.get(method, method)]
        note = "" if method in POLICIES else f"batch of delta's '{twins[method]}'; memory not metered"
        if method == "none" and common > batch:
            note = "at the common batch it exceeds the budget: timed as the reference"
        sps = (None, None)
        if batch:
            if progress is not None:
                progress(f"timing {method} at its max batch {batch}")
            sps = time_methods(case, [method], batch, budget=budget, rounds=1, bandwidth=bandwidth,
                               device=device)[method]  # fmt: skip
        at_common = overhead.get(method, (None, None))
        rows.append(MethodResult(method=method, max_batch=batch, peak_bytes=peak if method in POLICIES else None,
                                 seconds_per_sample=sps[0], cpu_seconds_per_sample=sps[1], common_batch=common,
                                 common_seconds_per_sample=at_common[0], common_cpu_seconds_per_sample=at_common[1],
                                 note=note))  # fmt: skip
    return rows
