"""Host offload: side-stream copies into pinned buffers on CUDA, exact synchronous copies on CPU."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import torch

from effcore.device import cuda_available, infer_device
from effcore.errors import ConfigError

__all__ = [
    "CopyEvent",
    "CopyStream",
    "HostOffloader",
    "OffloadHandle",
    "pinned_empty",
    "pinned_empty_like",
]


def pinned_empty(shape: Sequence[int], dtype: torch.dtype, *, pin: bool | None = None) -> torch.Tensor:
    """An uninitialised host tensor, page-locked when ``pin`` (default: when CUDA is present)."""
    pin = cuda_available() if pin is None else pin
    # `pin_memory=True` raises without a CUDA driver, so it is only asked for when one exists.
    return torch.empty(tuple(shape), dtype=dtype, device="cpu", pin_memory=pin)


def pinned_empty_like(t: torch.Tensor, *, pin: bool | None = None) -> torch.Tensor:
    """A contiguous host tensor with ``t``'s shape and dtype, pinned as in :func:`pinned_empty`."""
    return pinned_empty(t.shape, t.dtype, pin=pin)


class CopyEvent:
    """A point in a copy stream's work; on CPU every copy is synchronous, so it is always complete."""

    __slots__ = ("_device", "_event")

    def __init__(self, event: torch.cuda.Event | None = None, device: torch.device | None = None) -> None:
        self._event = event
        self._device = device

    def wait(self) -> None:
        """Make the current stream of the event's device wait for it (does not block the host)."""
        if self._event is not None:
            torch.cuda.current_stream(self._device).wait_event(self._event)

    def query(self) -> bool:
        """True when the work before this event has finished."""
        return self._event is None or self._event.query()

    def synchronize(self) -> None:
        """Block the host until the work before this event has finished."""
        if self._event is not None:
            self._event.synchronize()


class CopyStream:
    """A side stream for transfers (``torch.cuda.Stream`` on CUDA, a no-op on CPU).

    ``with stream:`` queues the enclosed work on it; :meth:`record` marks a point in that work and
    :meth:`wait_for` makes the current (compute) stream wait for such a point.
    """

    def __init__(self, device: str | torch.device | None = None) -> None:
        self.device = infer_device(device)
        self.stream: torch.cuda.Stream | None = (
            torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        )
        self._contexts: list[torch.cuda.StreamContext] = []

    def __enter__(self) -> CopyStream:
        if self.stream is not None:
            ctx = torch.cuda.stream(self.stream)
            ctx.__enter__()
            self._contexts.append(ctx)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.stream is not None:
            self._contexts.pop().__exit__(exc_type, exc, tb)

    def record(self) -> CopyEvent:
        """An event after all work queued on this stream so far."""
        if self.stream is None:
            return CopyEvent()
        event = torch.cuda.Event()
        event.record(self.stream)
        return CopyEvent(event, self.device)

    def wait_for(self, event: CopyEvent) -> None:
        """Make the current (compute) stream wait for ``event`` without blocking the host."""
        event.wait()

    def wait_current(self) -> None:
        """Make this stream wait for the work already queued on the current (compute) stream."""
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))

    def synchronize(self) -> None:
        """Block the host until everything queued on this stream has finished."""
        if self.stream is not None:
            self.stream.synchronize()


@dataclass(frozen=True, slots=True)
class OffloadHandle:
    """One transfer started by :class:`HostOffloader`: ``done()`` polls it, ``synchronize()`` waits."""

    key: str
    event: CopyEvent
    nbytes: int

    def done(self) -> bool:
        return self.event.query()

    def synchronize(self) -> None:
        self.event.synchronize()


@dataclass(slots=True)
class _Entry:
    raw: torch.Tensor  # the pooled uint8 host buffer
    host: torch.Tensor  # `raw` viewed with the offloaded tensor's dtype and shape
    offloaded: OffloadHandle
    loaded: OffloadHandle | None = None
    device_copy: torch.Tensor | None = None


class HostOffloader:
    """Keeps tensors in (pinned, reused) host buffers and brings them back to ``device`` on demand.

    CUDA stream rule: ``offload`` queues the device->host copy on the copy stream after the work
    already queued on the current stream, then calls ``tensor.record_stream(copy_stream)``; the
    caching allocator therefore does not hand the tensor's block to another allocation until the
    copy stream has passed the point where the caller frees it, so callers may drop the device
    tensor as soon as ``offload`` returns. ``prefetch`` allocates the destination on the current
    stream and copies on the copy stream; ``get`` makes the current stream wait for that copy, so
    later frees on the current stream are ordered after it and need no ``record_stream``. Both
    copies wait for the work already queued on the current stream (the source is produced there,
    the destination block may have just been freed there): call ``prefetch(next)`` before queuing
    the current layer's compute so that the copy overlaps it.

    On CPU "device" and "host" are the same memory, but every step still makes a real, exact copy:
    the tensor returned by ``get`` shares memory with neither the source nor the host buffer.
    Host buffers are pooled by byte size: ``drop`` returns a buffer to the pool, offloads of the
    same size reuse it, and ``host_bytes`` counts every buffer held (in use or pooled).
    """

    def __init__(
        self, device: str | torch.device | None = None, *, max_host_bytes: int | None = None
    ) -> None:
        if max_host_bytes is not None and max_host_bytes < 0:
            raise ConfigError(
                f"max_host_bytes must be >= 0, got {max_host_bytes}", hint="or None for no limit"
            )
        self.device = infer_device(device)
        self.max_host_bytes = max_host_bytes
        self.stream = CopyStream(self.device)
        self._entries: dict[str, _Entry] = {}
        self._pool: list[torch.Tensor] = []
        self.host_bytes = 0

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _take_buffer(self, key: str, nbytes: int) -> torch.Tensor:
        for i, raw in enumerate(self._pool):
            if raw.numel() == nbytes:
                return self._pool.pop(i)
        budget = self.max_host_bytes
        if budget is not None:
            # Idle pooled buffers of other sizes are freed before the budget is declared exceeded.
            while self._pool and self.host_bytes + nbytes > budget:
                self.host_bytes -= self._pool.pop().numel()
            if self.host_bytes + nbytes > budget:
                raise ConfigError(
                    f"offloading {key!r} needs {nbytes} bytes of host memory, over the budget "
                    f"max_host_bytes={budget} ({self.host_bytes} bytes already held)",
                    hint="raise max_host_bytes or drop() keys that are no longer needed",
                )
        self.host_bytes += nbytes
        return pinned_empty((nbytes,), torch.uint8, pin=self.device.type == "cuda")

    def offload(self, key: str, tensor: torch.Tensor) -> OffloadHandle:
        """Start copying ``tensor`` (on ``device``) into the host buffer for ``key``.

        A new offload of an existing key replaces it (its buffer is reused when the size matches);
        when the budget is exceeded a :class:`ConfigError` is raised and ``key`` is left absent.
        """
        if tensor.device != self.device:
            raise ConfigError(
                f"cannot offload {key!r}: tensor is on {tensor.device}, offloader on {self.device}",
                hint="create one HostOffloader per device",
            )
        nbytes = tensor.numel() * tensor.element_size()
        if key in self._entries:
            self.drop(key)
        raw = self._take_buffer(key, nbytes)
        host = raw.view(tensor.dtype).view(tensor.shape)
        src = tensor.detach()
        self.stream.wait_current()
        with self.stream:
            host.copy_(src, non_blocking=True)
            event = self.stream.record()
        if src.is_cuda:
            src.record_stream(self.stream.stream)
        handle = OffloadHandle(key, event, nbytes)
        self._entries[key] = _Entry(raw=raw, host=host, offloaded=handle)
        return handle

    def _entry(self, key: str) -> _Entry:
        if key not in self._entries:
            raise KeyError(f"{key!r} was not offloaded (known: {sorted(self._entries)})")
        return self._entries[key]

    def host(self, key: str) -> torch.Tensor:
        """The host buffer holding ``key``, once its offload copy has finished (shared, not a copy:
        valid until ``key`` is dropped or offloaded again)."""
        entry = self._entry(key)
        entry.offloaded.synchronize()
        return entry.host

    def prefetch(self, key: str) -> OffloadHandle:
        """Start copying ``key`` back to ``device`` (a no-op when a prefetch is already pending)."""
        entry = self._entry(key)
        if entry.loaded is not None:
            return entry.loaded
        # Allocated on the current stream: the copy stream waits for that stream's earlier users.
        dst = torch.empty(entry.host.shape, dtype=entry.host.dtype, device=self.device)
        self.stream.wait_current()
        with self.stream:
            dst.copy_(entry.host, non_blocking=True)
            event = self.stream.record()
        entry.device_copy = dst
        entry.loaded = OffloadHandle(key, event, entry.offloaded.nbytes)
        return entry.loaded

    def get(self, key: str) -> torch.Tensor:
        """The device tensor for ``key``, ready for work queued on the current stream.

        Ownership of the prefetched copy passes to the caller; the host copy stays until ``drop``.
        """
        handle = self.prefetch(key)
        entry = self._entries[key]
        self.stream.wait_for(handle.event)
        out, entry.device_copy, entry.loaded = entry.device_copy, None, None
        assert out is not None
        return out

    def drop(self, key: str) -> None:
        """Forget ``key``; its host buffer returns to the pool for reuse."""
        entry = self._entry(key)
        del self._entries[key]
        if entry.loaded is not None:
            # A prefetched copy nobody took: order its free on the current stream after the copy.
            entry.loaded.event.wait()
        self._pool.append(entry.raw)

    def prefetched_bytes(self) -> int:
        """Bytes of device copies prefetched and not yet taken by ``get``."""
        return sum(e.loaded.nbytes for e in self._entries.values() if e.loaded is not None)

    def trim(self) -> int:
        """Free the pooled (unused) host buffers; returns the bytes released."""
        freed = sum(raw.numel() for raw in self._pool)
        self._pool.clear()
        self.host_bytes -= freed
        return freed

    def synchronize(self) -> None:
        """Block the host until every transfer started so far has finished."""
        self.stream.synchronize()
