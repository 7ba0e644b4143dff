"""Start a job on ``nproc`` ranks under torchrun and turn its failures into one-line errors.

The job (a dict) goes to the workers as a JSON file; ``python -m MODULE COMMAND JOB.json`` runs on
every rank (``MODULE`` calls :func:`effcore.distributed.run_worker`). Rank 0 reports progress as JSON
lines on stdout (``{"event": ...}``), which :func:`run_job` hands to ``on_event``. A rank that fails
reports one classified line on stderr (its own error, a lost peer or a timeout) and torchrun stops
the others. The job's error names the root cause, in this order: a rank's own error (a user error,
then a bug in its step); a rank that died without a word (a crash, the OOM killer); a rank that
timed out waiting for a peer; a rank that lost contact with a peer (the consequence of one of the
above). torchrun's own "first observed failure" is not used: it is decided at one-second
resolution, so a peer that noticed the death at once can be named instead of the rank that died.
The wall-clock ``timeout_s`` bounds the whole job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from effcore.errors import EffmlError

__all__ = ["ERROR_PREFIX", "TIMEOUT_ENV", "JobError", "root_cause", "run_job"]

ERROR_PREFIX = "effml-rank-error "
"""How a worker's stderr line reporting its failure starts (followed by JSON: rank, kind, message)."""
TIMEOUT_ENV = "EFFML_RANK_TIMEOUT_S"
"""The environment variable that tells workers how long a collective may wait for a peer."""


class JobError(EffmlError):
    """A distributed job failed: a rank's own error line, or how the job died."""


def _threads(nproc: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def run_job(
    module: str,
    command: str,
    job: dict[str, Any],
    *,
    nproc: int,
    timeout_s: float = 1800.0,
    rank_timeout_s: float = 60.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run ``python -m MODULE COMMAND JOB.json`` on ``nproc`` ranks; raises :class:`JobError` on failure."""
    if nproc < 1:
        raise JobError(f"--nproc must be >= 1, got {nproc}")
    if not (timeout_s > 0 and rank_timeout_s > 0):
        raise JobError(
            f"timeouts must be positive, got {timeout_s} s for the job, {rank_timeout_s} s per rank"
        )
    with tempfile.TemporaryDirectory(prefix="effml-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--log-dir", str(Path(tmp) / "logs"), "-m", module, command, str(job_file)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(_threads(nproc)), TIMEOUT_ENV: str(rank_timeout_s),
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)  # fmt: skip
        reports: list[dict[str, Any]] = []
        died: list[tuple[int, int]] = []
        expired = threading.Event()

        def read_stderr() -> None:
            # The workers' classified error lines, and torchrun's failure summary ("rank : 1",
            # "exitcode : 17") for the ranks that died without one.
            assert proc.stderr is not None
            rank = None
            for line in proc.stderr:
                text = line.strip()
                if text.startswith(ERROR_PREFIX):
                    with contextlib.suppress(json.JSONDecodeError):
                        reports.append(json.loads(text[len(ERROR_PREFIX) :]))
                m = re.match(r"rank\s*:\s*(\d+)", text)
                if m:
                    rank = int(m.group(1))
                m = re.match(r"exitcode\s*:\s*(-?\d+)", text)
                if m and rank is not None:
                    died.append((rank, int(m.group(1))))
                    rank = None

        def expire() -> None:
            expired.set()
            os.killpg(proc.pid, signal.SIGKILL)

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, expire)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.strip()
                if line.startswith("{") and on_event is not None:
                    with contextlib.suppress(json.JSONDecodeError):
                        on_event(json.loads(line))
            code = proc.wait()
        finally:
            timer.cancel()
            reader.join(timeout=5)
        if code == 0:
            return
        if expired.is_set():
            raise JobError(
                f"the job ran past its {timeout_s:.0f} s limit and was stopped", hint="raise --timeout"
            )
        raise root_cause(reports, died, code)


def root_cause(reports: list[dict[str, Any]], died: list[tuple[int, int]], code: int) -> JobError:
    """The job's error from the ranks' reports and torchrun's ``(rank, exit code)`` failures."""
    for kind in ("input", "step"):
        own = [r for r in reports if r["kind"] == kind]
        if own:
            return JobError(f"rank {own[0]['rank']}: {own[0]['message']}")
    spoke = {r["rank"] for r in reports}
    # -15: SIGTERM, how torchrun stops the other ranks once one has failed
    silent = [(rank, c) for rank, c in died if rank not in spoke and c != -signal.SIGTERM]
    if silent:
        rank, c = silent[0]
        hint = ("killed by SIGKILL: usually the out-of-memory killer; lower the memory it needs"
                if c == -signal.SIGKILL else "the other ranks were stopped; rerun to see whether it repeats")  # fmt: skip
        return JobError(f"rank {rank} died with exit code {c} without reporting an error", hint=hint)
    for kind, hint in (
        ("timeout", "a rank hung or is far slower than the others; raise --rank-timeout if its steps are "
                    "legitimately that long"),
        ("lost", "another rank died without reporting an error"),
    ):  # fmt: skip
        seen = [r for r in reports if r["kind"] == kind]
        if seen:
            return JobError(f"rank {seen[0]['rank']}: {seen[0]['message']}", hint=hint)
    return JobError(
        f"a rank died (torchrun exit code {code}) without reporting an error",
        hint="rerun; if it repeats, check memory (a killed rank usually ran out)",
    )
