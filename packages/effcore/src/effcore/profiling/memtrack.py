"""Memory of a training step by category (parameters, gradients, optimizer state, activations)."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState

from effcore.errors import ConfigError

__all__ = ["MemoryBreakdown", "track_memory"]

_OTHER_KINDS = (_MemRefType.BUFFER, _MemRefType.TEMP, _MemRefType.OTH)


@dataclass(frozen=True, kw_only=True, slots=True)
class MemoryBreakdown:
    """Bytes of one step on the model's device, by category.

    - ``parameters``, ``gradients``: high-water marks over the step;
    - ``optimizer_state``: what the optimizer holds after the step (its transient work buffers
      count towards ``peak`` only);
    - ``optimizer_state_peak``: high-water mark of the optimizer's state and of what its step
      allocates (an optimizer that brings state in from the host for a moment shows it here);
    - ``activations``: activation bytes alive when the model's forward returns (saved for
      backward, plus the outputs);
    - ``other``: high-water mark of buffers, backward temporaries and tracked inputs together;
    - ``peak``: high-water mark of the total (at most the sum of the categories, which peak at
      different times).
    """

    parameters: int
    gradients: int
    optimizer_state: int
    optimizer_state_peak: int
    activations: int
    other: int
    peak: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class _NoHandle:
    def remove(self) -> None:
        pass


_NO_HANDLE = _NoHandle()


class _HighWaterTracker(MemTracker):
    """MemTracker that also keeps each category's high-water mark on one device."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.high: dict[Any, int] = {}

    def observe(self) -> None:
        snap = self._curr_mem_snap.get(self.device, {})
        current = {kind: snap.get(kind, 0) for kind in _MemRefType}
        current["other"] = sum(current[k] for k in _OTHER_KINDS)
        for key, value in current.items():
            self.high[key] = max(self.high.get(key, 0), value)

    def _update_peak_stats(self, peak_state: Any) -> None:
        # Called by MemTracker after every dispatched op.
        super()._update_peak_stats(peak_state)
        self.observe()

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True) -> Any:
        # MemTracker hooks the gradient of every parameter, and a frozen one refuses a hook
        # (layer-wise fine-tuning, adapters): a placeholder handle makes it skip those.
        frozen = [
            p for p in module.parameters()
            if not p.requires_grad and self._param_to_grad_hook_handles.get(p) is None
        ]  # fmt: skip
        for p in frozen:
            self._param_to_grad_hook_handles[p] = (_NO_HANDLE, _NO_HANDLE)
        try:
            return super()._track_module_params_and_buffers(module, install_grad_hooks)
        finally:
            for p in frozen:
                self._param_to_grad_hook_handles.pop(p, None)

    def current(self, kind: _MemRefType) -> int:
        return self._curr_mem_snap.get(self.device, {}).get(kind, 0)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    raise ConfigError(f"{type(model).__name__} has no parameters to track")


def track_memory(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    step_fn: Callable[[], Any],
    *,
    inputs: Iterable[torch.Tensor] = (),
) -> MemoryBreakdown:
    """Run ``step_fn()`` (one forward, backward and optimizer step) and break its memory down by category.

    ``step_fn`` must call ``model(...)`` once, so that the end of the forward pass is seen. Tensors
    made before the call are invisible unless they belong to ``model``/``optimizer`` or are
    passed in ``inputs`` (counted as ``other``).
    """
    device = _device_of(model)
    tracker = _HighWaterTracker(device)
    tracker.track_external(model, *([optimizer] if optimizer is not None else []), *inputs)
    try:
        with warnings.catch_warnings(), tracker:
            # MemTracker warns when a module is collected before its backward hooks run.
            warnings.filterwarnings("ignore", message="Module is None")
            tracker.observe()
            step_fn()
    except NotImplementedError as err:
        raise ConfigError(
            f"MemTracker cannot follow this step: {err}", hint="call model(...) once in step_fn"
        ) from None
    tracker.observe()
    stats = tracker.memory_tracking.get(model)
    post_forward = stats.snapshots.get(_ModState.POST_FW) if stats is not None else None
    if not post_forward:
        raise ConfigError(
            "step_fn never called the model", hint="call model(...) inside step_fn, not model.forward"
        )
    activations = post_forward[0].get(device, {}).get(_MemRefType.ACT, 0)
    return MemoryBreakdown(
        parameters=tracker.high.get(_MemRefType.PARAM, 0),
        gradients=tracker.high.get(_MemRefType.GRAD, 0),
        optimizer_state=tracker.current(_MemRefType.OPT),
        optimizer_state_peak=tracker.high.get(_MemRefType.OPT, 0),
        activations=activations,
        other=tracker.high.get("other", 0),
        peak=tracker.get_tracker_snapshot("peak").get(device, {}).get("Total", 0),
    )
