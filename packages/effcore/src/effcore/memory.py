"""Memory statistics: allocator or process RSS figures, and live-tensor bytes by category."""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from effcore.device import infer_device
from effcore.errors import EffmlError

__all__ = [
    "MemoryStats",
    "ResidencyMeter",
    "SavedPeak",
    "TensorTracker",
    "memory_stats",
    "reset_peak",
    "saved_tensor_peak",
    "storage_key",
    "track_activations",
    "track_training_state",
]

MemorySource = Literal["cuda-allocator", "process-rss", "tracker"]


@dataclass(kw_only=True, slots=True, frozen=True)
class MemoryStats:
    """Bytes in use now, held by the allocator, and at the high-water mark, with where they came from.

    On CPU (``source="process-rss"``) there is no allocator pool to look into: ``allocated`` and
    ``reserved`` are both the process's resident set size, ``peak_allocated`` its peak RSS.
    """

    allocated: int
    reserved: int
    peak_allocated: int
    source: MemorySource


def _rss_bytes() -> int:
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_rss_bytes()  # no /proc (macOS): the peak is the best available figure
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    # VmHWM first: it is the live address space's high-water mark and `reset_peak` can lower it;
    # getrusage's ru_maxrss also keeps the pre-exec image's peak and can never be reset.
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024  # bytes on macOS, KiB on Linux


def memory_stats(device: str | torch.device | None = None) -> MemoryStats:
    """The CUDA caching allocator's figures on CUDA, the process's RSS and peak RSS on CPU."""
    dev = infer_device(device)
    if dev.type == "cuda":
        stats = torch.cuda.memory_stats(dev)
        return MemoryStats(
            allocated=int(stats.get("allocated_bytes.all.current", 0)),
            reserved=int(stats.get("reserved_bytes.all.current", 0)),
            peak_allocated=int(stats.get("allocated_bytes.all.peak", 0)),
            source="cuda-allocator",
        )
    rss = _rss_bytes()
    # Read after the RSS so the peak covers it; the max guards against page-granular races.
    peak = max(_peak_rss_bytes(), rss)
    return MemoryStats(allocated=rss, reserved=rss, peak_allocated=peak, source="process-rss")


def reset_peak(device: str | torch.device | None = None) -> None:
    """Restart the peak from the current usage (the allocator's peak on CUDA, the peak RSS on CPU)."""
    dev = infer_device(device)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # "5": reset the RSS high-water mark (Linux >= 4.0)
    except OSError:
        raise EffmlError(
            "cannot reset the peak RSS on this system",
            hint="needs Linux >= 4.0 with a writable /proc/self/clear_refs; compare two memory_stats() instead",
        ) from None


Trackable = torch.Tensor | nn.Module | torch.optim.Optimizer | Mapping | Iterable | None


def _tensors(obj: Trackable) -> Iterator[torch.Tensor]:
    if obj is None:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, nn.Module):
        yield from obj.parameters()
        yield from obj.buffers()
    elif isinstance(obj, torch.optim.Optimizer):
        for state in obj.state.values():
            yield from _tensors(state)
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, Iterable) and not isinstance(obj, str | bytes):
        for item in obj:
            yield from _tensors(item)
    elif not isinstance(obj, int | float | bool | str | bytes):
        raise TypeError(
            f"cannot track {type(obj).__name__}: pass tensors, a module, an optimizer or iterables"
        )


def storage_key(t: torch.Tensor) -> tuple[tuple, int]:
    """A key identifying ``t``'s storage among live tensors, and the storage's size in bytes.

    A view and its base give the same key; the key of a freed storage may be reused by a later one.
    """
    try:
        storage = t.untyped_storage()
        return (t.device.type, t.device.index, storage.data_ptr()), storage.nbytes()
    except (RuntimeError, NotImplementedError, TypeError):
        # Tensors without a plain storage (sparse, some subclasses) count their own elements.
        return ("tensor", id(t)), t.numel() * t.element_size()


class TensorTracker:
    """Live tensors by category, counted in bytes of *unique storages*.

    Holds weak references only: freed tensors drop out. A view and its base share one storage and
    count once; a storage reached from several categories counts for the category that tracked it
    first. A storage counts whole even when only a view of part of it was tracked. Tensors are
    tracked as they were when passed: call ``track`` again for tensors created later (e.g. new
    gradients); re-tracking a tensor in the same category is a no-op.
    """

    def __init__(self) -> None:
        # category -> id(tensor) -> (registration number, weak reference)
        self._refs: dict[str, dict[int, tuple[int, weakref.ref[torch.Tensor]]]] = {}
        self._count = 0
        self.peak = 0  # the largest total() observed so far

    def track(self, category: str, obj: Trackable) -> None:
        """Register the tensors of ``obj`` (tensor, module, optimizer state, mapping or iterable)."""
        refs = self._refs.setdefault(category, {})
        for t in _tensors(obj):
            entry = refs.get(id(t))
            if entry is None or entry[1]() is not t:
                refs[id(t)] = (self._count, weakref.ref(t))
                self._count += 1

    def bytes_by_category(self) -> dict[str, int]:
        """Bytes of unique live storages per category (categories in registration order)."""
        live: list[tuple[int, str, torch.Tensor]] = []
        for category, refs in self._refs.items():
            for key, (number, ref) in list(refs.items()):
                t = ref()
                if t is None:
                    del refs[key]
                else:
                    live.append((number, category, t))
        out = dict.fromkeys(self._refs, 0)
        seen: set[tuple] = set()
        for _, category, t in sorted(live, key=lambda item: item[0]):
            key, nbytes = storage_key(t)
            if key not in seen:
                seen.add(key)
                out[category] += nbytes
        self.peak = max(self.peak, sum(out.values()))
        return out

    def total(self) -> int:
        """Bytes of all unique live storages across categories."""
        return sum(self.bytes_by_category().values())

    def stats(self) -> MemoryStats:
        """The tracked total as :class:`MemoryStats` (peak: the largest total observed so far)."""
        total = self.total()
        return MemoryStats(allocated=total, reserved=total, peak_allocated=self.peak, source="tracker")

    def clear(self, category: str | None = None) -> None:
        """Stop tracking ``category`` (every category when None)."""
        if category is None:
            self._refs.clear()
        else:
            self._refs.pop(category, None)


def track_training_state(
    model: nn.Module, optimizer: torch.optim.Optimizer | None = None, *, tracker: TensorTracker | None = None
) -> TensorTracker:
    """Register ``model``'s parameters, buffers, present gradients and ``optimizer``'s state."""
    tracker = tracker if tracker is not None else TensorTracker()
    params = list(model.parameters())
    tracker.track("parameters", params)
    tracker.track("gradients", [p.grad for p in params])
    tracker.track("buffers", list(model.buffers()))
    if optimizer is not None:
        tracker.track("optimizer_state", optimizer)
    return tracker


def _is_parameter(t: torch.Tensor) -> bool:
    # Linear saves `weight.t()`, a view whose base is the parameter.
    return isinstance(t, nn.Parameter) or isinstance(t._base, nn.Parameter)


@contextlib.contextmanager
def track_activations(tracker: TensorTracker, category: str = "activations") -> Iterator[TensorTracker]:
    """Within the block, register every tensor autograd saves for backward, parameters excepted.

    Saved tensors are weakly referenced: once backward (or dropping the output) frees the graph,
    the ones nothing else holds drop out of ``category``.
    """

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not _is_parameter(t):
            tracker.track(category, t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield tracker


class ResidencyMeter:
    """Bytes of unique storages that holders declare resident, by category: now and at the high-water mark.

    ``hold(key, nbytes, category)`` adds a holder of storage ``key`` (see :func:`storage_key`); the
    storage counts once, for the category of its first holder, until its last holder calls
    ``release``. ``peak`` is exact at every call (not sampled). With ``record=True`` every change
    appends ``(label, live bytes by category)`` to ``trace`` (for plots of memory over one step).
    """

    def __init__(self, *, base: int = 0, record: bool = False) -> None:
        self.base = base  # bytes always resident (parameters, gradients), counted in live and peak
        self.live = base
        self.peak = base
        self.by_category: dict[str, int] = {}
        self.trace: list[tuple[str, dict[str, int]]] | None = [] if record else None
        self._holders: dict[tuple, tuple[int, str]] = {}

    def hold(self, key: tuple, nbytes: int, category: str = "saved", label: str = "") -> None:
        count, owner = self._holders.get(key, (0, category))
        self._holders[key] = (count + 1, owner)
        if count == 0:
            self.live += nbytes
            self.by_category[owner] = self.by_category.get(owner, 0) + nbytes
            self.peak = max(self.peak, self.live)
            self._record(label)

    def release(self, key: tuple, nbytes: int, label: str = "") -> None:
        count, owner = self._holders[key]
        if count > 1:
            self._holders[key] = (count - 1, owner)
            return
        del self._holders[key]
        self.live -= nbytes
        self.by_category[owner] -= nbytes
        self._record(label)

    def resident(self) -> list[tuple]:
        """The keys of the storages resident now, in the order they became resident."""
        return list(self._holders)

    def _record(self, label: str) -> None:
        if self.trace is not None:
            self.trace.append((label, dict(self.by_category)))


class SavedPeak(ResidencyMeter):
    """Bytes autograd holds for backward: now (``live``) and the high-water mark (``peak``)."""


@contextlib.contextmanager
def saved_tensor_peak() -> Iterator[SavedPeak]:
    """Within the block, follow every tensor autograd saves for backward (parameters excepted) until
    it is freed; ``peak`` is the most bytes of unique storages held at once.

    Unlike sampling a :class:`TensorTracker`, the mark is exact at every save and release, so it
    catches the moment a pipeline stage holds the most micro-batches in flight.
    """
    meter = SavedPeak()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not _is_parameter(t):
            key, nbytes = storage_key(t)
            meter.hold(key, nbytes)
            weakref.finalize(t, meter.release, key, nbytes)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield meter
