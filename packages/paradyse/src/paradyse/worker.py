"""The per-rank entry point torchrun starts: ``python -m paradyse.worker {profile,train} ARGS.json``.

Reads its job from a JSON file (written by the CLI), joins the env:// process group (gloo: every
strategy moves CPU tensors here) and runs the job on a group whose collectives give up after
``PARADYSE_TIMEOUT_S`` seconds, so nothing hangs. A failure becomes one line on stderr,
``paradyse-error {"rank": R, "kind": K, "message": M}``, which :func:`paradyse.launch.run_job` turns
into the job's error, and an exit code:

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
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from effcore.errors import EffmlError
from paradyse.launch import ERROR_PREFIX

__all__ = ["EXIT_CODES", "classify_failure", "main"]

EXIT_CODES = {"input": 2, "step": 1, "lost": 3, "timeout": 4}
# Ranks start seconds apart on a busy machine (each imports torch): joining may take this long.
_JOIN_TIMEOUT_S = 300.0
# What gloo and the TCP store say when a peer's process is gone, and when a peer does not answer.
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


def _profile(job: dict, group) -> None:
    from paradyse.config import ModelConfig
    from paradyse.profile import run_profile

    cfg = ModelConfig.from_dict(job["model"])
    rank = dist.get_rank(group)

    def report(point: dict) -> None:
        if rank == 0:
            print(json.dumps({"event": "point", **point}), flush=True)

    prof = run_profile(cfg, job["seq_lens"], strategies=job["strategies"], batch=job["batch"],
                       repeats=job["repeats"], warmup=job["warmup"], switch=job["switch"], group=group,
                       on_point=report)  # fmt: skip
    if rank == 0:
        prof.save(job["out"])


def _train(job: dict, group) -> None:
    from paradyse.train import TrainArgs, train_worker

    train_worker(TrainArgs.from_json(json.dumps(job)), group=group,
                 on_step=lambda rec: print(json.dumps({"event": "step", **rec}), flush=True))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("profile", "train"):
        print("usage: python -m paradyse.worker {profile,train} JOB.json", file=sys.stderr)
        return 2
    rank = int(os.environ.get("RANK", "0"))
    timeout_s = float(os.environ.get("PARADYSE_TIMEOUT_S", "60"))
    try:
        job = json.loads(Path(argv[1]).read_text())
        dist.init_process_group("gloo", timeout=timedelta(seconds=max(_JOIN_TIMEOUT_S, timeout_s)))
        group = dist.new_group(timeout=timedelta(seconds=timeout_s))
        (_profile if argv[0] == "profile" else _train)(job, group)
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


if __name__ == "__main__":
    sys.exit(main())
