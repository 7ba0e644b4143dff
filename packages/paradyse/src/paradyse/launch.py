"""Start a job on ``nproc`` ranks under torchrun and turn its failures into one-line errors.

The job (a dict) goes to the workers as a JSON file; rank 0 reports progress as JSON lines on
stdout (``{"event": ...}``), which :func:`run_job` hands to ``on_event``. A rank that fails prints
``error: rank R: ...`` (see ``paradyse.worker``); torchrun then stops the others. The wall-clock
``timeout_s`` bounds the whole job, so nothing hangs.
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

__all__ = ["JobError", "run_job"]


class JobError(EffmlError):
    """A distributed job failed: a rank's own error line, or how the job died."""


def _threads(nproc: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // nproc)


def run_job(
    command: str,
    job: dict[str, Any],
    *,
    nproc: int,
    timeout_s: float = 1800.0,
    rank_timeout_s: float = 60.0,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    """Run ``python -m paradyse.worker COMMAND`` on ``nproc`` ranks; raises :class:`JobError` on failure."""
    if nproc < 1:
        raise JobError(f"--nproc must be >= 1, got {nproc}")
    with tempfile.TemporaryDirectory(prefix="paradyse-job-") as tmp:
        job_file = Path(tmp) / "job.json"
        job_file.write_text(json.dumps(job))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--log-dir", str(Path(tmp) / "logs"), "-m", "paradyse.worker", command, str(job_file)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(_threads(nproc)), "PARADYSE_TIMEOUT_S": str(rank_timeout_s),
               "PYTHONUNBUFFERED": "1"}  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)  # fmt: skip
        errors: list[str] = []
        died: list[str] = []

        def read_stderr() -> None:
            # Our workers' "error: ..." lines, and torchrun's failure summary ("rank : 1", "exitcode : 17").
            # The "Root Cause (first observed failure)" entry goes first: the others were stopped.
            assert proc.stderr is not None
            rank, root = None, False
            for line in proc.stderr:
                text = line.strip()
                if text.startswith("error: "):
                    errors.append(text[len("error: ") :])
                if text.startswith("Root Cause"):
                    root = True
                m = re.match(r"rank\s*:\s*(\d+)", text)
                if m:
                    rank = m.group(1)
                m = re.match(r"exitcode\s*:\s*(-?\d+)", text)
                if m and rank is not None:
                    entry = f"rank {rank} died with exit code {m.group(1)}"
                    died.insert(0, entry) if root else died.append(entry)
                    rank = None

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        timer = threading.Timer(timeout_s, lambda: os.killpg(proc.pid, signal.SIGKILL))
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
        if code in (-signal.SIGKILL, 128 + signal.SIGKILL) and not errors:
            raise JobError(
                f"the job ran past its {timeout_s:.0f} s limit and was stopped", hint="raise --timeout"
            )
        own = [e for e in errors if "lost contact" not in e]
        if own:
            raise JobError(own[0])
        if died:
            lost = f"; {errors[0]}" if errors else ""
            raise JobError(f"{died[0]}{lost}", hint="the other ranks were stopped; see that rank's log")
        if errors:
            raise JobError(errors[0])
        raise JobError(
            f"a rank died (torchrun exit code {code}) without reporting an error",
            hint="rerun; if it repeats, check memory (a killed rank usually ran out)",
        )
