"""The per-rank side of ``grass train --nproc N`` (torchrun via ``effcore.distributed.run_job``):
each rank runs the training loop in DDP; rank 0 reports steps and the result as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from effcore.distributed import run_worker
from grass.config import RunConfig
from grass.train import run


def train(job: dict[str, Any], group: Any) -> None:
    import torch.distributed as dist

    rank = dist.get_rank()

    def progress(stage: str, done: int, total: int) -> None:
        if rank == 0 and stage == "train":
            print(json.dumps({"event": "step", "done": done, "total": total}), flush=True)

    run_dir = Path(job["run_dir"]) if job.get("run_dir") else None
    result = run(RunConfig(**job["config"]), device=job["device"], run_dir=run_dir, resume=job["resume"],
                 eval_limit=job["eval_limit"], generate=job["generate"], progress=progress)  # fmt: skip
    if rank == 0:
        print(json.dumps({"event": "done", "result": result.to_dict()}, default=str), flush=True)


if __name__ == "__main__":
    raise SystemExit(run_worker({"train": train}, module="grass.worker"))
