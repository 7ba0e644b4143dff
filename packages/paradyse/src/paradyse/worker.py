"""The per-rank entry point torchrun starts: ``python -m paradyse.worker {profile,train} ARGS.json``.

Reads its job from a JSON file (written by the CLI), joins the env:// process group (gloo on CPU,
NCCL is not used: every strategy moves CPU tensors here) with a bounded timeout, runs, and exits
with the effml error convention: a one-line ``error: ...`` and exit code 2 (or 3 when it lost
contact with another rank) instead of a hang or a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch.distributed as dist

from effcore.errors import EffmlError

__all__ = ["main"]


def _profile(job: dict) -> None:
    from paradyse.config import ModelConfig
    from paradyse.profile import run_profile

    cfg = ModelConfig.from_dict(job["model"])
    rank = dist.get_rank()

    def report(point: dict) -> None:
        if rank == 0:
            print(json.dumps({"event": "point", **point}), flush=True)

    prof = run_profile(cfg, job["seq_lens"], strategies=job["strategies"], batch=job["batch"],
                       repeats=job["repeats"], warmup=job["warmup"], switch=job["switch"], on_point=report)  # fmt: skip
    if rank == 0:
        prof.save(job["out"])


def _train(job: dict) -> None:
    from paradyse.train import TrainArgs, train_worker

    train_worker(TrainArgs.from_json(json.dumps(job)),
                 on_step=lambda rec: print(json.dumps({"event": "step", **rec}), flush=True))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("profile", "train"):
        print("usage: python -m paradyse.worker {profile,train} JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    timeout = timedelta(seconds=float(os.environ.get("PARADYSE_TIMEOUT_S", "60")))
    rank = int(os.environ.get("RANK", "0"))
    try:
        dist.init_process_group("gloo", timeout=timeout)
        (_profile if argv[0] == "profile" else _train)(job)
        # Leave together: a rank that tears its connections down while a peer is still writing
        # results can make the peer's gloo threads abort (seen as SIGABRT at exit).
        dist.barrier()
    except EffmlError as err:
        print(f"error: rank {rank}: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except (RuntimeError, dist.DistBackendError) as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        print(f"error: rank {rank}: lost contact with the other ranks ({first})", file=sys.stderr, flush=True)
        return 3
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
