"""Distributed jobs and collectives every parallel package shares.

- :func:`run_job` (``jobs``): start ``python -m MODULE COMMAND JOB.json`` on ``nproc`` ranks under
  torchrun, in bounded time; a failed job's error names the rank and the root cause.
- :func:`run_worker` (``worker``): the per-rank side; classifies a failure as the rank's own error,
  a lost peer or a timeout, in one line.
- ``collectives``: differentiable all-gather, reduce-scatter, broadcast and all-to-all.

Tests use :func:`effcore.testing.distributed.launch` (forked ranks, no torchrun) instead.
"""

from effcore.distributed.collectives import (
    all_gather,
    all_reduce_grads,
    all_to_all,
    broadcast_from,
    gather_along,
    rank_and_size,
    reduce_scatter,
    scatter_sum_along,
)
from effcore.distributed.jobs import ERROR_PREFIX, TIMEOUT_ENV, JobError, root_cause, run_job
from effcore.distributed.worker import EXIT_CODES, classify_failure, run_worker

__all__ = [  # noqa: RUF022 -- grouped by submodule
    # jobs
    "ERROR_PREFIX",
    "JobError",
    "TIMEOUT_ENV",
    "root_cause",
    "run_job",
    # worker
    "EXIT_CODES",
    "classify_failure",
    "run_worker",
    # collectives
    "all_gather",
    "all_reduce_grads",
    "all_to_all",
    "broadcast_from",
    "gather_along",
    "rank_and_size",
    "reduce_scatter",
    "scatter_sum_along",
]
