"""Run a function on ``world_size`` real processes joined by a ``torch.distributed`` process group."""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import inspect
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = [
    "LaunchError",
    "LaunchTimeoutError",
    "launch",
    "start_method",
]

# After the first failure, how long the other ranks get to report their own error (often a consequence).
_ERROR_GRACE_S = 2.0
_PR_SET_PDEATHSIG = 1


class LaunchError(RuntimeError):
    """A rank raised (or died); ``rank`` names it and ``remote_traceback`` holds its traceback text."""

    def __init__(self, message: str, *, rank: int | None = None, remote_traceback: str = "") -> None:
        self.rank = rank
        self.remote_traceback = remote_traceback
        super().__init__(message)


class LaunchTimeoutError(LaunchError, TimeoutError):
    """The ranks did not all finish within ``timeout_s``; every rank was killed."""


_AUTOGRAD_FORK_POISONED = False


def _autograd_survives_fork() -> bool:
    """Whether a forked child can still run backward. Once this process has run backward after
    ``torch.export`` or fake tensors, autograd has started a device thread pool and a forked
    child's backward raises "Unable to handle autograd's threading in combination with fork-based
    multiprocessing". It never recovers, so a failure is remembered."""
    global _AUTOGRAD_FORK_POISONED
    if _AUTOGRAD_FORK_POISONED:
        return False
    pid = os.fork()
    if pid == 0:  # the probe: one tiny backward, exit 0 when it works
        code = 1
        try:
            x = torch.ones(1, requires_grad=True)
            (x * 2).sum().backward()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    _AUTOGRAD_FORK_POISONED = os.waitstatus_to_exitcode(status) != 0
    return not _AUTOGRAD_FORK_POISONED


def start_method() -> str:
    """``"fork"`` when this process can fork safely (Linux, single thread, no CUDA, no process group,
    autograd usable in a child), else ``"forkserver"``: ranks fork from a fresh server process.

    Forked ranks skip re-importing torch (seconds per rank). Under either method ``fn`` may be
    defined in a test module: it travels by reference and is loaded from its file when its module
    cannot be imported by name (``_ByPath``).
    """
    # tqdm's monitor thread (started by any progress bar, e.g. transformers' weight loading) only
    # sleeps and polls; it holds no lock a forked rank needs, so it does not make forking unsafe.
    others = [
        t for t in threading.enumerate() if t is not threading.main_thread() and t.name != "tqdm_monitor"
    ]
    safe = (
        sys.platform == "linux"
        and "fork" in mp.get_all_start_methods()
        and threading.current_thread() is threading.main_thread()
        and not others
        and not torch.cuda.is_initialized()
        and not (dist.is_available() and dist.is_initialized())
    )
    return "fork" if safe and _autograd_survives_fork() else "forkserver"


class _ByPath:
    """A module-level function that pickles as (module, qualname, file): a child that cannot import
    the module by name (pytest's importlib mode names test modules after their path) loads the file."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def __reduce__(self) -> tuple:
        return (_load_by_path, (self.fn.__module__, self.fn.__qualname__, inspect.getfile(self.fn)))

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _load_by_path(module: str, qualname: str, path: str) -> _ByPath:
    mod = sys.modules.get(module)
    if mod is None:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            spec = importlib.util.spec_from_file_location(module, path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[module] = mod
            spec.loader.exec_module(mod)
    target: Any = mod
    for part in qualname.split("."):
        target = getattr(target, part)
    return _ByPath(target)


def launch(
    fn: Callable[..., Any],
    world_size: int,
    *args: Any,
    backend: str = "gloo",
    timeout_s: float = 120.0,
    num_threads: int | None = None,
) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` processes and return each rank's result.

    Each rank joins a fresh ``backend`` process group (rendezvous through a file store in a fresh
    temporary folder: no TCP port to race for when several launches start at once),
    runs ``fn`` with ``num_threads`` torch threads (default: the CPU cores shared out among ranks),
    destroys the group and sends its return value back (it must be picklable).

    Raises:
        LaunchError: a rank raised or died; the message names the rank that failed first and
            carries its traceback text (the other ranks are killed).
        LaunchTimeoutError: not every rank finished within ``timeout_s``; all ranks are killed.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = num_threads or max(1, cores // world_size)
    method = start_method()
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["torch", "torch.distributed"])
        fn = _ByPath(fn)
    rendezvous = tempfile.mkdtemp(prefix="effcore-launch-")
    init_method = f"file://{os.path.join(rendezvous, 'store')}"
    pipes = [ctx.Pipe(duplex=False) for _ in range(world_size)]
    procs = [
        ctx.Process(
            target=_rank_main,
            args=(rank, world_size, init_method, backend, timeout_s, threads, pipes[rank][1], fn, args),
            name=f"effcore-rank{rank}",
        )
        for rank in range(world_size)
    ]
    try:
        for proc in procs:
            proc.start()
        for _, send_end in pipes:
            send_end.close()  # the parent only reads; the children hold the write ends
        return _collect(procs, [recv_end for recv_end, _ in pipes], fn, world_size, timeout_s)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            if proc.pid is not None:
                proc.join()
        for recv_end, _ in pipes:
            recv_end.close()
        shutil.rmtree(rendezvous, ignore_errors=True)


def _collect(
    procs: list[Any],
    conns: list[multiprocessing.connection.Connection],
    fn: Callable[..., Any],
    world_size: int,
    timeout_s: float,
) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    results: dict[int, Any] = {}
    errors: dict[int, tuple[float, str]] = {}
    first_error_at: float | None = None
    pending = set(range(world_size))
    while pending:
        now = time.monotonic()
        if first_error_at is not None and now - first_error_at > _ERROR_GRACE_S:
            break
        if now > deadline:
            name = getattr(fn, "__qualname__", repr(fn))
            raise LaunchTimeoutError(
                f"launch({name}, world_size={world_size}) timed out after {timeout_s:g} s; "
                f"ranks still running: {sorted(pending)} (all ranks killed)"
            )
        waitables: list[Any] = [conns[r] for r in pending] + [procs[r].sentinel for r in pending]
        multiprocessing.connection.wait(waitables, timeout=min(0.5, max(0.0, deadline - now)))
        for rank in sorted(pending):
            if conns[rank].poll():
                status, *payload = pickle.loads(conns[rank].recv_bytes())
                if status == "ok":
                    results[rank] = payload[0]
                else:
                    errors[rank] = (payload[0], payload[1])
                pending.discard(rank)
            elif not procs[rank].is_alive():
                procs[rank].join()
                errors[rank] = (
                    time.time(),
                    f"rank {rank} exited with code {procs[rank].exitcode} without a result",
                )
                pending.discard(rank)
        if errors and first_error_at is None:
            first_error_at = time.monotonic()
    if errors:
        rank, (_, tb) = min(errors.items(), key=lambda item: item[1][0])
        others = sorted(set(errors) - {rank})
        also = f" (ranks {others} failed too)" if others else ""
        raise LaunchError(
            f"rank {rank} of {world_size} failed first{also}:\n{tb}", rank=rank, remote_traceback=tb
        )
    return [results[r] for r in range(world_size)]


def _die_with_parent() -> None:
    if sys.platform == "linux":
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _rank_main(
    rank: int,
    world_size: int,
    init_method: str,
    backend: str,
    timeout_s: float,
    num_threads: int,
    conn: multiprocessing.connection.Connection,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    _die_with_parent()
    failed_at: float | None = None  # taken before teardown, whose closed sockets fail the other ranks
    try:
        torch.set_num_threads(num_threads)
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
        dist.init_process_group(
            backend,
            init_method=init_method,
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
        )
        try:
            payload = pickle.dumps(("ok", fn(rank, world_size, *args)))
        except BaseException:
            failed_at = time.time()
            raise
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
    except BaseException:
        conn.send_bytes(pickle.dumps(("error", failed_at or time.time(), traceback.format_exc())))
        conn.close()
        raise SystemExit(1) from None
    conn.send_bytes(payload)
    conn.close()
