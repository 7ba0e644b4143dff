"""One training step under saved-tensor hooks: profile what is saved, or keep/swap/recompute per plan."""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_leaves

from delta.simulate import Action
from delta.trace import BlockCall, EventKind, Slot, StepTrace
from effcore.errors import EffmlError
from effcore.memory import ResidencyMeter, storage_key
from effcore.offload import HostOffloader

__all__ = ["PlanMismatchError", "StepRun", "run_step"]


class PlanMismatchError(EffmlError):
    """The step saved different tensors than the plan was made for (shapes or control flow changed)."""


class _Stop(Exception):
    """Raised inside a recompute once every tensor it was run for has been saved again."""


class _Packed:
    """What autograd holds for one saved tensor instead of the tensor itself."""

    __slots__ = ("__weakref__", "action", "index", "ref", "tensor", "version")

    def __init__(self, index: int, action: Action, t: torch.Tensor) -> None:
        self.index, self.action = index, action
        self.tensor = t if action == "keep" else None
        # autograd skips its in-place check on hooked tensors: the version is checked at unpack.
        self.ref, self.version = weakref.ref(t), t._version


def _is_parameter(t: torch.Tensor) -> bool:
    return isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter)


def _copy_nbytes(t: torch.Tensor) -> int:
    if t.is_contiguous():
        return t.numel() * t.element_size()
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.stride(), strict=True) if n > 0)
    return span * t.element_size()


def _tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Every tensor in a call's arguments, nested ones included (HF layers get (cos, sin) tuples)."""
    return [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@dataclass(slots=True)
class _Call:
    module: nn.Module
    args: tuple
    kwargs: dict
    versions: list[int]
    rng: tuple | None
    autocast: tuple[bool, torch.dtype]
    refs: list[weakref.ref] | None = None  # profile: its inputs, for the in-place check at forward's end
    start: float = 0.0
    hook_s: float = 0.0


@dataclass(kw_only=True, slots=True)
class StepRun:
    """The result of one step: the function's return value, the measured meter, the trace if profiled."""

    result: Any
    meter: ResidencyMeter
    trace: StepTrace | None
    seconds: float


class _Step:
    """The state of one step; ``profile`` when ``actions`` is None (every block tensor swapped, timed)."""

    def __init__(self, *, blocks: list[nn.Module], names: list[str], device: torch.device,
                 static_bytes: int, plan_trace: StepTrace | None, actions: dict[int, Action] | None,
                 prefetch: int | None, min_bytes: int, preserve_rng_state: bool, record: bool,
                 max_host_bytes: int | None) -> None:  # fmt: skip
        self.profiling = actions is None
        self.blocks, self.names, self.device = blocks, names, device
        self.plan_trace, self.actions = plan_trace, actions or {}
        self.prefetch, self.min_bytes, self.preserve_rng = prefetch, min_bytes, preserve_rng_state
        self.meter = ResidencyMeter(base=static_bytes, record=record)
        self.offloader = HostOffloader(device, max_host_bytes=max_host_bytes)
        self.slots: list[Slot] = []
        self.calls: list[_Call] = []
        self.block_calls: list[BlockCall] = []
        self.events: list[tuple[EventKind, int]] = []
        self.stack: list[tuple[int, int]] = []  # (block call, packs so far)
        self.held: dict[int, tuple[tuple, int]] = {}
        self.recomputed: dict[int, torch.Tensor] = {}
        self.loaded: dict[int, torch.Tensor] = {}
        self.started: set[int] = set()
        self.done_recompute: set[int] = set()
        self.freed: set[int] = set()
        self.recomputing = False
        self.count = -1
        self.t0 = time.perf_counter()
        self.forward_end: float | None = None
        self.storage_ids: dict[int, tuple[StorageWeakRef, int]] = {}
        self.next_sid = 0
        self.strides: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        self.by_block: dict[int, list[int]] = {}
        if plan_trace is not None:
            for s in plan_trace.slots:
                self.by_block.setdefault(s.block, []).append(s.index)
            self.recompute_blocks = {
                s.block for s in plan_trace.slots if self._action(s.index) == "recompute"
            }
        else:
            self.recompute_blocks = set()

    # --- bookkeeping -------------------------------------------------------------------------
    def _now(self) -> float:
        if self.profiling and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter() - self.t0

    def _action(self, i: int) -> Action:
        assert self.plan_trace is not None
        return self.actions.get(self.plan_trace.slots[i].storage, "keep")

    def _storage_id(self, t: torch.Tensor) -> int:
        ref = StorageWeakRef(t.untyped_storage())
        entry = self.storage_ids.get(ref.cdata)
        if entry is None or entry[0].expired():  # a freed storage's address may be reused by a new one
            entry = self.storage_ids[ref.cdata] = (ref, self.next_sid)
            self.next_sid += 1
        return entry[1]

    def _hold(self, i: int, t: torch.Tensor, category: str) -> None:
        key, nbytes = storage_key(t)
        self.held[i] = (key, nbytes)
        self.meter.hold(key, nbytes, category)

    def _free(self, i: int) -> None:
        self.freed.add(i)
        self.events.append(("free", i))
        entry = self.held.pop(i, None)
        if entry is not None:
            self.meter.release(*entry)
        self.loaded.pop(i, None)
        self.recomputed.pop(i, None)
        if f"{i}" in self.offloader:
            self.offloader.drop(f"{i}")

    # --- module hooks ------------------------------------------------------------------------
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.recomputing:
            return
        b = len(self.calls)
        self.events.append(("enter", b))
        tensors = _tensors(args, kwargs)
        # profiling: to see whether the block draws random numbers; planned: to replay them in recompute
        wants_rng = self.profiling or (b in self.recompute_blocks and self.preserve_rng)
        rng = _rng_state(self.device) if wants_rng else None
        call = _Call(module=module, args=args if b in self.recompute_blocks else (),
                     kwargs=kwargs if b in self.recompute_blocks else {}, versions=[t._version for t in tensors],
                     rng=rng, autocast=(torch.is_autocast_enabled(self.device.type),
                                        torch.get_autocast_dtype(self.device.type)))  # fmt: skip
        self.calls.append(call)
        if self.profiling:
            name = self.names[self.blocks.index(module)]
            inputs = [(self._storage_id(t), storage_key(t)[1]) for t in tensors]
            self.block_calls.append(BlockCall(index=b, name=name, inputs=inputs))
            call.refs = [weakref.ref(t) for t in tensors]
        elif b in self.recompute_blocks:
            for t in tensors:
                key, nbytes = storage_key(t)
                self.meter.hold(key, nbytes, "inputs")
        self.stack.append((b, 0))
        call.start = self._now()

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if self.recomputing:
            return
        b, _ = self.stack.pop()
        if self.profiling:
            call, info = self.calls[b], self.block_calls[b]
            info.forward_s = self._now() - call.start - call.hook_s
            self._check_inputs()  # inputs that die before the forward ends are checked while alive
            if call.rng is not None and any(
                a is not None and a.ne(z).any()
                for a, z in zip(call.rng, _rng_state(self.device), strict=True)
            ):
                info.random_ops.append("draws random numbers")

    def _check_inputs(self) -> None:
        """At the end of the forward: a block whose input changed in place since its call cannot be rerun."""
        for call, info in zip(self.calls, self.block_calls, strict=False):
            for ref, version in zip(call.refs or (), call.versions, strict=True):
                t = ref()
                if t is not None and t._version != version:
                    info.not_recomputable = "its input is modified in place during the forward"

    # --- saved tensor hooks ------------------------------------------------------------------
    def pack(self, t: torch.Tensor) -> Any:
        if _is_parameter(t):
            if self.stack:
                b, n = self.stack[-1]
                self.stack[-1] = (b, n + 1)
            return t
        h0 = time.perf_counter()
        i = self.count = self.count + 1
        block, position = -1, -1
        if self.stack:
            block, position = self.stack[-1]
            self.stack[-1] = (block, position + 1)
        if self.profiling:
            size, cap = t.numel() * t.element_size(), self.offloader.max_host_bytes
            fits_host = cap is None or self.offloader.host_bytes + size <= cap  # profile within the host cap
            action: Action = "swap" if block >= 0 and size >= self.min_bytes and fits_host else "keep"
            call = self.calls[block] if block >= 0 else None
            now = self._now()
            key_nbytes = storage_key(t)[1]
            self.slots.append(Slot(index=i, block=block, position=position, storage=self._storage_id(t),
                                   nbytes=key_nbytes, copy_nbytes=_copy_nbytes(t), shape=tuple(t.shape),
                                   dtype=str(t.dtype).removeprefix("torch."),
                                   op=type(t.grad_fn).__name__ if t.grad_fn is not None else "input",
                                   prefix_s=0.0 if call is None else now - call.start - call.hook_s,
                                   pack_s=now))  # fmt: skip
        else:
            action = self._check_slot(i, t, block, position)
        self.events.append(("pack", i))
        packed = _Packed(i, action, t)
        weakref.finalize(packed, self._free, i)
        if action == "keep":
            self._hold(i, t, "kept")
        elif action == "swap":
            self.strides[i] = (tuple(t.shape), t.stride())
            self.offloader.offload(f"{i}", t)
        if self.profiling and block >= 0:
            self.calls[block].hook_s += time.perf_counter() - h0
        return packed

    def _check_slot(self, i: int, t: torch.Tensor, block: int, position: int) -> Action:
        assert self.plan_trace is not None
        slots = self.plan_trace.slots
        expected = slots[i] if i < len(slots) else None
        got = (block, position, tuple(t.shape), str(t.dtype).removeprefix("torch."))
        if expected is None or got != (expected.block, expected.position, expected.shape, expected.dtype):
            want = (
                "nothing"
                if expected is None
                else f"{expected.shape} {expected.dtype} in block {expected.block}"
            )
            raise PlanMismatchError(
                f"saved tensor #{i} is {got[2]} {got[3]} in block {block}, the plan expected {want}",
                hint="the step's shapes or control flow changed under an unchanged signature; "
                "call Delta.replan() or pass the changing tensors as step arguments",
            )
        return self._action(i)

    def unpack(self, packed: Any) -> torch.Tensor:
        if isinstance(packed, torch.Tensor):
            return packed
        i = packed.index
        if self.forward_end is None:
            self.forward_end = self._now()
            if self.profiling:
                self._check_inputs()
        self.events.append(("unpack", i))
        original = packed.ref()
        if original is not None and original._version != packed.version:
            raise EffmlError(
                f"a tensor saved for backward ({tuple(original.shape)}) was modified in place after it was saved",
                hint="clone it before the in-place op; the plain run would fail the same way",
            )
        if self.profiling and self.slots[i].unpack_s is None:
            self.slots[i].unpack_s = self._now()
        if not self.profiling:
            self._maybe_prefetch(i)
        if packed.action == "keep":
            return packed.tensor
        if packed.action == "swap":
            return self._load(i)
        if i not in self.recomputed:
            b = self.plan_trace.slots[i].block
            if b in self.done_recompute:
                raise EffmlError(
                    "backward read a recomputed tensor twice (retain_graph=True or a second backward)",
                    hint="a DELTA-managed step supports one backward; use policy 'none' for double backward",
                )
            self._recompute(b)
        return self.recomputed.pop(i)

    # --- swap ----------------------------------------------------------------------------------
    def _maybe_prefetch(self, i: int) -> None:
        b = self.plan_trace.slots[i].block
        if self.prefetch is None or b < 0 or b in self.started:
            return
        self.started.add(b)
        for bb in range(max(0, b - self.prefetch), b + 1):
            for j in self.by_block.get(bb, ()):
                if (
                    self._action(j) == "swap"
                    and j not in self.freed
                    and j not in self.held
                    and f"{j}" in self.offloader
                ):
                    self._load(j)

    def _load(self, i: int) -> torch.Tensor:
        if i in self.loaded:
            return self.loaded[i]
        dev = self.offloader.get(f"{i}")
        shape, stride = self.strides[i]
        if dev.stride() != stride:
            out = torch.empty_strided(shape, stride, dtype=dev.dtype, device=dev.device)
            dev = out.copy_(dev)
        self.loaded[i] = dev
        self._hold(i, dev, "swapped")
        return dev

    # --- recompute -----------------------------------------------------------------------------
    def _recompute(self, b: int) -> None:
        call = self.calls[b]
        tensors = _tensors(call.args, call.kwargs)
        if [t._version for t in tensors] != call.versions:
            raise EffmlError(
                f"cannot recompute block {self.plan_trace.blocks[b].name}: its input was modified in place "
                "after its forward",
                hint="use a policy that swaps instead, or avoid the in-place op",
            )
        needed = {self.plan_trace.slots[j].position: j for j in self.by_block[b]
                  if self._action(j) == "recompute" and j not in self.freed}  # fmt: skip
        last = max(needed)
        out: dict[int, torch.Tensor] = {}
        count = 0

        def pack(t: torch.Tensor) -> None:
            nonlocal count
            position, count = count, count + 1
            if position in needed:
                out[needed[position]] = t.detach()
            if position >= last:
                raise _Stop

        def unpack(_: None) -> torch.Tensor:
            raise AssertionError("the recompute graph is never differentiated")

        # The rerun updates clones of the buffers (BatchNorm statistics): the originals keep their values
        # and their versions, which kept saved tensors are checked against.
        originals = [(m._buffers, name, buf) for m in call.module.modules() for name, buf in m._buffers.items()
                     if buf is not None]  # fmt: skip
        for owner, name, buf in originals:
            owner[name] = buf.clone()
        devices = [self.device] if self.device.type == "cuda" else []
        self.recomputing = True
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(torch.random.fork_rng(devices=devices))
                if call.rng is not None:
                    torch.set_rng_state(call.rng[0])
                    if call.rng[1] is not None:
                        torch.cuda.set_rng_state(call.rng[1], self.device)
                stack.enter_context(torch.enable_grad())
                stack.enter_context(
                    torch.autocast(self.device.type, dtype=call.autocast[1], enabled=call.autocast[0])
                )
                stack.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, unpack))
                with contextlib.suppress(_Stop):
                    call.module(*call.args, **call.kwargs)
        finally:
            self.recomputing = False
            for owner, name, buf in originals:
                owner[name] = buf
        self.done_recompute.add(b)
        for j, t in out.items():
            self.recomputed[j] = t
            self._hold(j, t, "recomputed")
        for t in tensors:
            self.meter.release(*storage_key(t))
        call.args, call.kwargs = (), {}

    def finish(self) -> None:
        """End of step: inputs of blocks never recomputed are let go, host buffers freed."""
        if not self.profiling:
            for b in self.recompute_blocks - self.done_recompute:
                for t in _tensors(self.calls[b].args, self.calls[b].kwargs):
                    self.meter.release(*storage_key(t))
        self.calls.clear()
        self.offloader.synchronize()
        self.offloader.trim()


def run_step(fn: Callable[..., Any], args: tuple, kwargs: dict, *, blocks: list[nn.Module], names: list[str],
             device: torch.device, static_bytes: int, signature: tuple, plan_trace: StepTrace | None = None,
             actions: dict[int, Action] | None = None, prefetch: int | None = None, min_bytes: int = 1024,
             preserve_rng_state: bool = True, record: bool = False,
             max_host_bytes: int | None = None) -> StepRun:  # fmt: skip
    """Run ``fn(*args, **kwargs)`` (forward and backward) under the hooks; profile when ``actions`` is None."""
    step = _Step(blocks=blocks, names=names, device=device, static_bytes=static_bytes, plan_trace=plan_trace,
                 actions=actions, prefetch=prefetch, min_bytes=min_bytes, preserve_rng_state=preserve_rng_state,
                 record=record, max_host_bytes=max_host_bytes)  # fmt: skip
    handles = []
    for block in blocks:
        handles.append(block.register_forward_pre_hook(step.pre_hook, with_kwargs=True))
        handles.append(block.register_forward_hook(step.post_hook, with_kwargs=True))
    try:
        with torch.autograd.graph.saved_tensors_hooks(step.pack, step.unpack):
            result = fn(*args, **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        step.finish()
    seconds = time.perf_counter() - step.t0
    trace = None
    if step.profiling:
        trace = StepTrace(signature=signature, slots=step.slots, blocks=step.block_calls, events=step.events,
                          static_bytes=static_bytes, forward_s=step.forward_end or seconds, step_s=seconds)  # fmt: skip
    return StepRun(result=result, meter=step.meter, trace=trace, seconds=seconds)
