"""``LayerwiseAdamW``: AdamW over units (layers) that knows every parameter from the start, keeps
optimizer state only for the active units on the device, and streams it layer by layer.

Each unit's two moments live in one flat fp32 buffer (``exp_avg`` then ``exp_avg_sq`` of every
parameter), so moving a unit is one transfer. Where the state of a unit lives:

- ``offload="none"``: on the device while it exists (LMFlow's LISA: the state of a deactivated
  layer stays where it was, or is dropped with ``on_switch="reset"``);
- ``offload="inactive"``: active units on the device, a deactivated unit's state goes to host memory
  and comes back when the unit is sampled again;
- ``offload="layerwise"`` (GRASS): every unit's state lives on the host; ``step()`` brings unit
  ``i+1`` to the device while unit ``i`` is updated and writes unit ``i-1`` back, so the device holds
  about two units' state at a time. On CPU the copies are synchronous (same semantics).

``on_switch="reset"`` drops a deactivated unit's moments (BAdam, LMFlow's LISA); ``"resume"`` keeps
them for its return. The update is torch's own AdamW kernel (``torch.optim.adam.adam`` with
decoupled weight decay) applied per unit: with every unit active it equals ``torch.optim.AdamW``
bit for bit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.optim.adam import adam

from effcore.errors import ConfigError
from effcore.offload import HostOffloader

__all__ = ["OFFLOAD_MODES", "LayerwiseAdamW", "OffloadStats"]

Offload = Literal["none", "inactive", "layerwise"]
OFFLOAD_MODES: tuple[str, ...] = ("none", "inactive", "layerwise")


@dataclass(slots=True)
class OffloadStats:
    """Seconds the optimizer spent waiting on or queuing state transfers, bytes moved, and the most
    optimizer-state bytes resident on the device at once (moments of bound units plus prefetched
    copies: what a GPU holds; on CPU the host buffers are the same memory)."""

    transfer_s: float = 0.0
    to_device_bytes: int = 0
    to_host_bytes: int = 0
    peak_device_bytes: int = 0


class LayerwiseAdamW(torch.optim.Optimizer):
    """AdamW whose parameter groups are units: ``units[name] = [params]``; ``set_active`` chooses
    which units train (the others are frozen: ``requires_grad=False``)."""

    def __init__(
        self,
        units: dict[str, Sequence[nn.Parameter]],
        *,
        lr: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        offload: Offload = "layerwise",
        on_switch: Literal["resume", "reset"] = "resume",
        device: str | torch.device | None = None,
        foreach: bool | None = None,
    ) -> None:
        if offload not in OFFLOAD_MODES:
            raise ConfigError(
                f"unknown offload mode {offload!r}", hint=f"choose from {', '.join(OFFLOAD_MODES)}"
            )
        if on_switch not in ("resume", "reset"):
            raise ConfigError(f"unknown on_switch {on_switch!r}", hint="resume or reset")
        groups = [{"params": list(params), "unit": name} for name, params in units.items()]
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.offload, self.on_switch, self.foreach = offload, on_switch, foreach
        first = next(p for g in self.param_groups for p in g["params"])
        self.offloader = HostOffloader(device if device is not None else first.device)
        self._flat: dict[str, torch.Tensor] = {}  # unit -> flat moments on the device
        self._steps: dict[str, list[torch.Tensor]] = {}  # unit -> AdamW's step per parameter (CPU)
        self.active_units: tuple[str, ...] = tuple(g["unit"] for g in self.param_groups)
        self.stats = OffloadStats()
        self.hold = False  # True: step() updates nothing (GRASS's probing phase)

    # -- where each unit's state is ------------------------------------------------------------

    def _group(self, unit: str) -> dict[str, Any]:
        for g in self.param_groups:
            if g["unit"] == unit:
                return g
        raise KeyError(unit)

    def _bind(self, unit: str, flat: torch.Tensor) -> None:
        """Expose ``flat`` as ``self.state[p]`` views (what torch's tools and trackers read)."""
        self._flat[unit] = flat
        params = self._group(unit)["params"]
        total = sum(p.numel() for p in params)
        offset = 0
        for p, step in zip(params, self._steps[unit], strict=True):
            n = p.numel()
            self.state[p] = {
                "step": step,
                "exp_avg": flat[offset : offset + n].view_as(p),
                "exp_avg_sq": flat[total + offset : total + offset + n].view_as(p),
            }
            offset += n

    def device_bytes(self) -> int:
        """Optimizer-state bytes on the device now (bound units and prefetched copies)."""
        bound = sum(f.numel() * f.element_size() for f in self._flat.values())
        return bound + self.offloader.prefetched_bytes()

    def _note_peak(self) -> None:
        self.stats.peak_device_bytes = max(self.stats.peak_device_bytes, self.device_bytes())

    def _unbind(self, unit: str) -> torch.Tensor | None:
        for p in self._group(unit)["params"]:
            self.state.pop(p, None)
        return self._flat.pop(unit, None)

    def _to_device(self, unit: str) -> None:
        """Make ``unit``'s state resident: from the host, or fresh zeros the first time."""
        if unit in self._flat:
            return
        t0 = time.perf_counter()
        if unit in self.offloader:
            flat = self.offloader.get(unit)
            self.stats.to_device_bytes += flat.numel() * flat.element_size()
            self.offloader.drop(unit)
        else:
            params = self._group(unit)["params"]
            flat = torch.zeros(
                2 * sum(p.numel() for p in params), dtype=torch.float32, device=params[0].device
            )
            # torch's AdamW keeps a float32 CPU step per parameter
            self._steps[unit] = [torch.tensor(0.0, dtype=torch.float32) for _ in params]
        self.stats.transfer_s += time.perf_counter() - t0
        self._bind(unit, flat)
        self._note_peak()

    def _to_host(self, unit: str) -> None:
        flat = self._unbind(unit)
        if flat is None:
            return
        t0 = time.perf_counter()
        self.offloader.offload(unit, flat)
        self.stats.to_host_bytes += flat.numel() * flat.element_size()
        self.stats.transfer_s += time.perf_counter() - t0

    def _reset(self, unit: str) -> None:
        self._unbind(unit)
        if unit in self.offloader:
            self.offloader.drop(unit)
        self._steps.pop(unit, None)

    def set_active(self, units: Iterable[str]) -> None:
        """Train ``units`` from now on; freeze the rest and move or drop their state by the policy."""
        wanted = tuple(units)
        unknown = set(wanted) - {g["unit"] for g in self.param_groups}
        if unknown:
            raise ConfigError(f"unknown units {sorted(unknown)}")
        for g in self.param_groups:
            on = g["unit"] in wanted
            for p in g["params"]:
                p.requires_grad_(on)
                if not on:
                    p.grad = None
            if not on and g["unit"] in self.active_units:
                if self.on_switch == "reset":
                    self._reset(g["unit"])
                elif self.offload == "inactive":
                    self._to_host(g["unit"])
        if self.offload == "inactive":
            for unit in wanted:
                if unit in self.offloader:
                    self._to_device(unit)
        self.active_units = wanted

    # -- the update ------------------------------------------------------------------------------

    def _update(self, group: dict[str, Any]) -> None:
        unit = group["unit"]
        params = [p for p in group["params"] if p.grad is not None]
        if len(params) != len(group["params"]):
            # a unit is updated whole or not at all: its moments are one buffer
            raise ConfigError(f"unit {unit!r}: only some of its parameters have gradients")
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adam(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            foreach=self.foreach,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
            decoupled_weight_decay=True,
        )

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.hold:
            return loss
        # only active units: a frozen one may hold zeros that DDP wrote into its bucket
        active = set(self.active_units)
        todo = [
            g
            for g in self.param_groups
            if g["unit"] in active and any(p.grad is not None for p in g["params"])
        ]
        if self.offload == "layerwise":
            self._step_streamed(todo)
        else:
            for g in todo:
                self._to_device(g["unit"])
                self._update(g)
        return loss

    def _step_streamed(self, todo: list[dict[str, Any]]) -> None:
        """Unit ``i`` updates while unit ``i+1``'s state comes in and unit ``i-1``'s goes out."""
        for i, g in enumerate(todo):
            t0 = time.perf_counter()
            if i + 1 < len(todo) and todo[i + 1]["unit"] in self.offloader:
                self.offloader.prefetch(todo[i + 1]["unit"])  # queued before this unit's compute
            self.stats.transfer_s += time.perf_counter() - t0
            self._note_peak()
            self._to_device(g["unit"])
            self._update(g)
            self._to_host(g["unit"])  # write-back on the copy stream, after the update

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Every unit's moments (device-resident or offloaded) as CPU tensors, steps, group settings."""
        self.offloader.synchronize()
        units = {}
        for g in self.param_groups:
            unit = g["unit"]
            if unit in self._flat:
                flat = self._flat[unit].detach().to("cpu", copy=True)
            elif unit in self.offloader:
                flat = self.offloader.host(unit).clone()
            else:
                continue
            units[unit] = {"flat": flat, "steps": torch.stack(self._steps[unit])}
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        return {"units": units, "active": list(self.active_units), "groups": groups}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # type: ignore[override]
        names = [g["unit"] for g in self.param_groups]
        if [g["unit"] for g in state["groups"]] != names:
            raise ConfigError("the optimizer state belongs to another model (its units differ)")
        for unit in names:
            self._reset(unit)
        for g, saved in zip(self.param_groups, state["groups"], strict=True):
            g.update({k: v for k, v in saved.items() if k != "unit"})
        self.active_units = tuple(state["active"])
        for unit, entry in state["units"].items():
            params = self._group(unit)["params"]
            self._steps[unit] = [s.clone() for s in entry["steps"].unbind()]
            self._bind(unit, entry["flat"].to(params[0].device, copy=True))
            if self.offload == "layerwise" or (self.offload == "inactive" and unit not in self.active_units):
                self._to_host(unit)
        self.stats = OffloadStats()
