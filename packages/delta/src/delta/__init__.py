"""delta: DELTA swap-or-recompute scheduling and memory-efficient training for science models."""

from delta.api import Delta, default_blocks, static_bytes
from delta.evoformer import EvoformerBlock, EvoformerConfig, EvoformerStack
from delta.plan import BUDGETED, POLICIES, Plan, make_plan
from delta.runtime import PlanMismatchError
from delta.simulate import simulate
from delta.toolkit import Checkpointed, MixedPrecision, checkpoint_context, chunk_map
from delta.trace import StepTrace

__all__ = [  # noqa: RUF022 -- grouped by role, sorted within groups
    # the runtime
    "Delta",
    "PlanMismatchError",
    "default_blocks",
    "static_bytes",
    # plans
    "BUDGETED",
    "POLICIES",
    "Plan",
    "StepTrace",
    "make_plan",
    "simulate",
    # the survey's toolkit
    "Checkpointed",
    "MixedPrecision",
    "checkpoint_context",
    "chunk_map",
    "EvoformerBlock",
    "EvoformerConfig",
    "EvoformerStack",
]
