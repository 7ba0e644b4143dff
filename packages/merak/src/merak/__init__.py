"""Merak: automated 3D parallelism (data, tensor, pipeline) for unmodified HF transformers models.

``merak.parallelize`` (one call: capture, partition, split, parallelise), ``merak.capture`` (the proxy
graph), ``merak.shard`` / ``merak.partition`` (Merak's graph sharding and stage assignment),
``merak.schedules`` (Merak's and the classic pipeline schedules), ``merak.tp`` (tensor parallelism
derived from the graph). Names resolve lazily, so ``import merak`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from effcore.lazy import lazy_getattr

if TYPE_CHECKING:
    from merak.capture import CapturedModel, CaptureError, capture
    from merak.parallel import ParallelModel, causal_lm_loss, make_mesh, parallelize
    from merak.partition import assign_stages, stage_recompute_ratios
    from merak.plan import PipelinePlan, plan_pipeline
    from merak.schedules import SCHEDULES, instructions
    from merak.shard import shard_graph
    from merak.tp import derive_tp_plan

__version__ = "0.1.0"

_LAZY: dict[str, str] = {}
for _module, _names in {
    "merak.capture": ("CaptureError", "CapturedModel", "capture"),
    "merak.parallel": ("ParallelModel", "causal_lm_loss", "make_mesh", "parallelize"),
    "merak.partition": ("assign_stages", "stage_recompute_ratios"),
    "merak.plan": ("PipelinePlan", "plan_pipeline"),
    "merak.schedules": ("SCHEDULES", "instructions"),
    "merak.shard": ("shard_graph",),
    "merak.tp": ("derive_tp_plan",),
}.items():
    _LAZY.update(dict.fromkeys(_names, _module))

__all__ = [  # noqa: RUF022 -- grouped by submodule
    # one call
    "ParallelModel",
    "causal_lm_loss",
    "make_mesh",
    "parallelize",
    # capture and partition
    "CaptureError",
    "CapturedModel",
    "PipelinePlan",
    "assign_stages",
    "capture",
    "plan_pipeline",
    "shard_graph",
    "stage_recompute_ratios",
    # schedules and tensor parallelism
    "SCHEDULES",
    "derive_tp_plan",
    "instructions",
]


__getattr__ = lazy_getattr(__name__, _LAZY)
