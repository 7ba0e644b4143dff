"""The per-rank entry point torchrun starts: ``python -m paradyse.worker {profile,train} JOB.json``.

Runs on :func:`effcore.distributed.run_worker` (gloo: every strategy moves CPU tensors here), which
joins the process group with a timeout and reports a failure as one classified line (the rank's own
error, a lost peer, or a timeout) that :func:`effcore.distributed.run_job` turns into the job's error.
"""

from __future__ import annotations

import json
import sys

import torch.distributed as dist

from effcore.distributed import run_worker

__all__ = ["main"]


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
    return run_worker({"profile": _profile, "train": _train}, argv, module="paradyse.worker", backend="gloo")


if __name__ == "__main__":
    sys.exit(main())
