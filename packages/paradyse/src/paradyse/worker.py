"""The per-rank entry point torchrun starts: ``python -m paradyse.worker {profile,train} JOB.json``.

Runs on :func:`effcore.distributed.run_worker` with the job's backend (NCCL on CUDA, gloo on the CPU), which
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
    from paradyse.placement import Placement
    from paradyse.profile import run_profile

    cfg = ModelConfig.from_dict(job["model"])
    rank = dist.get_rank(group)

    def report(point: dict) -> None:
        if rank == 0:
            print(json.dumps({"event": "point", **point}), flush=True)

    place = Placement(device=job["device"], backend=job["backend"])
    prof = run_profile(cfg, job["seq_lens"], strategies=job["strategies"], batch=job["batch"],
                       repeats=job["repeats"], warmup=job["warmup"], switch=job["switch"], group=group,
                       backend=place.backend, device_name=place.device_name(), device=place.local_device(),
                       on_point=report)  # fmt: skip
    if rank == 0:
        prof.save(job["out"])


def _train(job: dict, group) -> None:
    from paradyse.train import TrainArgs, train_worker

    train_worker(TrainArgs.from_json(json.dumps(job)), group=group,
                 on_step=lambda rec: print(json.dumps({"event": "step", **rec}), flush=True))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    # the backend is the job's own ("backend": nccl on CUDA, gloo on the CPU; see paradyse.placement)
    return run_worker({"profile": _profile, "train": _train}, argv, module="paradyse.worker")


if __name__ == "__main__":
    sys.exit(main())
