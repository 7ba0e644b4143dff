"""The per-rank entry point torchrun starts: ``python -m merak.worker {train,bench} JOB.json``."""

from __future__ import annotations

import sys

from effcore.distributed import run_worker
from merak.bench import bench_worker
from merak.train import train_worker


def main(argv: list[str] | None = None) -> int:
    return run_worker({"train": train_worker, "bench": bench_worker}, argv, module="merak.worker")


if __name__ == "__main__":
    sys.exit(main())
