"""``Delta``: wrap a training step, give a budget; the first step of each input shape is profiled and planned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from delta.plan import BUDGETED, POLICIES, Plan, fmt_bytes, make_plan
from delta.runtime import StepRun, run_step
from delta.trace import StepTrace, signature
from effcore.device import device_spec, infer_device
from effcore.errors import ConfigError
from effcore.memory import storage_key

__all__ = ["Delta", "default_blocks", "static_bytes"]


def default_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The units recompute reruns: an ``nn.Sequential``'s children, else the children of the model's
    Sequential/ModuleList children and its other direct children, in registration order."""
    if isinstance(model, nn.Sequential):
        return list(model.named_children())
    out: list[tuple[str, nn.Module]] = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential | nn.ModuleList):
            out.extend((f"{name}.{sub}", m) for sub, m in child.named_children())
        else:
            out.append((name, child))
    return out


def static_bytes(model: nn.Module) -> int:
    """Parameters plus a gradient for each trainable one (unique storages)."""
    seen: dict[tuple, int] = {}
    grads = 0
    for p in model.parameters():
        key, nbytes = storage_key(p)
        if key not in seen:
            seen[key] = nbytes
            grads += p.numel() * p.element_size() if p.requires_grad else 0
    return sum(seen.values()) + grads


class Delta:
    """DELTA's runtime for one model: ``step(fn, *args)`` runs ``fn`` (forward and backward) within ``budget``.

    Budget: bytes of parameters, their gradients and every tensor autograd saves for backward that is
    resident on the device (see :mod:`delta.simulate` for exactly what counts). The first step for a
    new input signature (shapes, dtypes, devices of the arguments) is profiled with every block
    tensor swapped, then planned; later steps with that signature run the plan and fail loudly if
    the tensors they save differ from the profiled ones.
    """

    def __init__(self, model: nn.Module, *, budget: int | None = None, policy: str = "delta",
                 blocks: Sequence[tuple[str, nn.Module]] | None = None, device: str | torch.device | None = None,
                 prefetch: int | str | None = "auto", min_bytes: int = 1024, preserve_rng_state: bool = True,
                 max_host_bytes: int | None = None, bandwidth: float | None = None, record: bool = False) -> None:  # fmt: skip
        if policy not in POLICIES:
            raise ConfigError(f"unknown policy {policy!r}", hint=f"choose from {', '.join(POLICIES)}")
        if policy in BUDGETED and budget is None:
            raise ConfigError(f"policy {policy!r} needs a memory budget", hint="e.g. budget=4 * 2**30")
        if budget is not None and budget <= 0:
            raise ConfigError(f"budget must be positive, got {budget}")
        if min_bytes < 0:
            raise ConfigError(f"min_bytes must be >= 0, got {min_bytes}")
        self.model, self.policy, self.budget = model, policy, budget
        self.device = infer_device(device)
        self.static_bytes = static_bytes(model)
        if budget is not None and budget < self.static_bytes:
            raise ConfigError(
                f"budget {fmt_bytes(budget)} is below the parameters and gradients alone "
                f"({fmt_bytes(self.static_bytes)})",
                hint=f"raise it above {self.static_bytes} bytes (activations need more)",
            )
        named = list(blocks) if blocks is not None else default_blocks(model)
        if not named:
            raise ConfigError(
                f"{type(model).__name__} has no blocks to manage", hint="pass blocks=[(name, module)]"
            )
        self.names = [n for n, _ in named]
        self.blocks = [m for _, m in named]
        if prefetch == "auto":
            prefetch = 1 if self.device.type == "cuda" else None
        if prefetch is not None and (not isinstance(prefetch, int) or prefetch < 0):
            raise ConfigError(f"prefetch must be None or a block count >= 0, got {prefetch!r}")
        self.prefetch: int | None = prefetch
        self.min_bytes, self.preserve_rng_state = min_bytes, preserve_rng_state
        self.max_host_bytes, self.record = max_host_bytes, record
        self._bandwidth = bandwidth
        self.plans: dict[tuple, Plan] = {}
        self.last: StepRun | None = None
        self.last_plan: Plan | None = None
        self.profiled = 0  # how many steps were profiled (one per new signature)

    @property
    def bandwidth(self) -> float:
        """Host link bytes/s per direction, from :func:`effcore.device.device_spec` unless given."""
        if self._bandwidth is None:
            self._bandwidth = device_spec(self.device).host_link_bandwidth
        return self._bandwidth

    def replan(self) -> None:
        """Forget every plan: the next step of each signature is profiled again."""
        self.plans.clear()

    def _run(
        self, fn: Callable[..., Any], args: tuple, kwargs: dict, sig: tuple, plan: Plan | None
    ) -> StepRun:
        return run_step(fn, args, kwargs, blocks=self.blocks, names=self.names, device=self.device,
                        static_bytes=self.static_bytes, signature=sig,
                        plan_trace=None if plan is None else plan.trace,
                        actions=None if plan is None else plan.actions, prefetch=self.prefetch,
                        min_bytes=self.min_bytes, preserve_rng_state=self.preserve_rng_state, record=self.record,
                        max_host_bytes=self.max_host_bytes)  # fmt: skip

    def plan_for(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Plan:
        """Profile one step of ``fn`` (it runs: gradients accumulate) and return the plan, without running it."""
        sig = signature(args, kwargs)
        run = self._run(fn, args, kwargs, sig, None)
        self.profiled += 1
        assert run.trace is not None
        self.last = run
        return self.plan_trace(run.trace)

    def plan_trace(self, trace: StepTrace) -> Plan:
        """Plan from a trace profiled before (by any ``Delta`` on this model): one profile serves every policy."""
        plan = make_plan(trace, self.policy, self.budget, bandwidth=self.bandwidth, prefetch=self.prefetch,
                         overlap=self.device.type == "cuda", min_bytes=self.min_bytes,
                         preserve_rng_state=self.preserve_rng_state, max_host_bytes=self.max_host_bytes)  # fmt: skip
        self.plans[trace.signature] = self.last_plan = plan
        return plan

    def step(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)``, which must do the forward and the backward; returns what it returns."""
        sig = signature(args, kwargs)
        plan = self.plans.get(sig)
        if plan is None:
            self.plan_for(fn, *args, **kwargs)
            assert self.last is not None
            return self.last.result
        self.last = self._run(fn, args, kwargs, sig, plan)
        self.last_plan = plan
        return self.last.result
