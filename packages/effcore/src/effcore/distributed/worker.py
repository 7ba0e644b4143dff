"""The per-rank side of :func:`effcore.distributed.run_job`: join the group, run, report a failure in one line.

A package's worker module calls ``run_worker({"train": fn, ...})``; ``fn(job, group)`` runs on every
rank with the job's dict and a process group whose collectives give up after ``EFFML_RANK_TIMEOUT_S``
seconds, so nothing hangs. A failure becomes one line on stderr,
``effml-rank-error {"rank": R, "kind": K, "message": M}``, and an exit code:

| kind | what happened on this rank | exit code |
|---|---|---|
| ``input`` | a user error (an ``EffmlError``: a missing file, a plan that cannot fit) | 2 |
| ``step`` | its own code raised (a bug such as a shape mismatch): the exception's type and message | 1 |
| ``lost`` | a peer closed its connection: that peer died | 3 |
| ``timeout`` | a peer did not answer within the timeout: it hung or is far slower | 4 |
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from effcore.distributed.jobs import ERROR_PREFIX, TIMEOUT_ENV
from effcore.errors import EffmlError

__all__ = ["EXIT_CODES", "classify_failure", "run_worker"]

EXIT_CODES = {"input": 2, "step": 1, "lost": 3, "timeout": 4}
# Ranks start seconds apart on a busy machine (each imports torch): joining may take this long.
_JOIN_TIMEOUT_S = 300.0
# What gloo, NCCL and the TCP store say when a peer's process is gone, and when a peer does not answer.
_LOST = re.compile(
    r"closed by peer|reset by peer|broken pipe|connection refused|socket closed|ECONNRESET|EPIPE", re.I
)
_TIMEOUT = re.compile(r"timed out|timeout", re.I)


def _gist(err: BaseException) -> str:
    # "[.../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:40103. This is..."
    # -> "Connection closed by peer [127.0.0.1]:40103"
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return re.split(r"\.\s", text, maxsplit=1)[0][:300]


def classify_failure(err: BaseException, timeout_s: float) -> tuple[str, str]:
    """``(kind, message)`` of an exception raised on a rank (kinds in the module docstring)."""
    if isinstance(err, EffmlError):
        return "input", str(err)
    gist = _gist(err)
    if isinstance(err, RuntimeError):  # gloo's and the store's errors, torch.distributed.DistError
        if _LOST.search(str(err)):
            return "lost", f"lost contact with another rank ({gist})"
        if _TIMEOUT.search(str(err)):
            return "timeout", f"timed out after {timeout_s:g} s waiting for another rank ({gist})"
        if isinstance(err, dist.DistNetworkError):
            return "lost", f"lost contact with another rank ({gist})"
    return "step", f"failed: {type(err).__name__}: {gist}"


def run_worker(
    handlers: Mapping[str, Callable[[dict[str, Any], Any], None]],
    argv: list[str] | None = None,
    *,
    module: str = "worker",
    backend: str | None = None,
) -> int:
    """Run ``handlers[COMMAND](job, group)`` for ``argv = [COMMAND, JOB.json]``; returns the exit code.

    ``backend`` defaults to the job's ``"backend"`` entry, then to NCCL when this rank sees a GPU,
    else gloo (a job that asks for ``"device": "cpu"`` gets gloo).
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in handlers:
        print(f"usage: python -m {module} {{{','.join(handlers)}}} JOB.json", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    timeout_s = float(os.environ.get(TIMEOUT_ENV, "60"))
    try:
        job = json.loads(Path(argv[1]).read_text())
        wanted = backend or job.get("backend") or ("gloo" if job.get("device") == "cpu" else None)
        backend = wanted or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend, timeout=timedelta(seconds=max(_JOIN_TIMEOUT_S, timeout_s)))
        group = dist.new_group(timeout=timedelta(seconds=timeout_s))
        handlers[argv[0]](job, group)
        # Leave together: a rank that tears its connections down while a peer is still writing
        # results can make the peer's gloo threads abort (seen as SIGABRT at exit).
        dist.barrier(group)
    except Exception as err:  # every failure, a bug included, is reported as one classified line
        kind, message = classify_failure(err, timeout_s)
        line = json.dumps({"rank": rank, "kind": kind, "message": message})
        print(ERROR_PREFIX + line, file=sys.stderr, flush=True)
        return EXIT_CODES[kind]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0
