"""From a captured model to a pipeline plan (shards, costs, stages) and each stage's module."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from effcore.device import DeviceSpec
from effcore.errors import ConfigError
from merak.capture import CapturedModel
from merak.costs import measure_costs, predict_costs
from merak.overlap import SubPipelined
from merak.partition import Method, ShardCost, StagePlan, assign_stages
from merak.pipeline import StageModule
from merak.shard import Shard, shard_graph
from merak.stage import split_stages

__all__ = ["PipelinePlan", "build_stage_module", "plan_pipeline"]


@dataclass(kw_only=True)
class PipelinePlan:
    """Merak's shards of a captured model, their costs, and the stage each run of shards goes to."""

    shards: list[Shard]
    costs: list[ShardCost]
    stages: list[StagePlan]

    def segments(self) -> list[tuple[int, bool, tuple[int, ...]]]:
        """``(stage, checkpointed, shard indices)`` per segment: a stage's first ``n(1 - r)`` shards
        run plainly, the rest under recomputation (Merak's ``int(n * r)`` checkpointed layers)."""
        out = []
        for st in self.stages:
            idx = tuple(range(st.first, st.last + 1))
            ckpt = int(len(idx) * st.recompute_ratio)
            plain, rest = idx[: len(idx) - ckpt], idx[len(idx) - ckpt :]
            out += [(st.index, False, plain)] if plain else []
            out += [(st.index, True, rest)] if rest else []
        return out

    def to_dict(self) -> dict:
        return {
            "shards": [
                {"index": s.index, "leaves": list(s.leaves), "param_bytes": s.param_bytes}
                for s in self.shards
            ],
            "stages": [st.to_dict() for st in self.stages],
        }


def plan_pipeline(
    captured: CapturedModel,
    stages: int,
    *,
    method: Method = "time",
    shard_count: int | None = None,
    recompute_ratio: float | Sequence[float] | None = None,
    schedule: str | None = None,
    spec: DeviceSpec | None = None,
    bandwidth: float = 1e10,
) -> PipelinePlan:
    """Shard ``captured`` and assign the shards to ``stages``. Costs are predicted from FLOPs on
    ``spec`` when given (deterministic: every rank computes the same plan), else measured here."""
    shards = shard_graph(captured, shard_count)
    if stages > len(shards):
        raise ConfigError(
            f"{stages} pipeline stages but the model splits into only {len(shards)} shards",
            hint="use fewer stages (or a larger shard_count)",
        )
    costs = predict_costs(captured, shards, spec) if spec is not None else measure_costs(captured, shards)
    plans = assign_stages(
        costs, stages, method=method, recompute_ratio=recompute_ratio, schedule=schedule, bandwidth=bandwidth
    )
    return PipelinePlan(shards=shards, costs=costs, stages=plans)


def build_stage_module(
    captured: CapturedModel, plan: PipelinePlan, stage: int, *, sub_pipelined: bool = False
) -> StageModule:
    """The module of pipeline stage ``stage``: its segments, cut from the captured graph.

    ``sub_pipelined``: the graph was captured at half the micro-batch and every segment runs both
    halves in lockstep (``merak.overlap``), overlapping tensor-parallel all-reduces with compute.
    """
    segments = plan.segments()
    node_segment = {
        name: k for k, (_, _, idx) in enumerate(segments) for i in idx for name in plan.shards[i].nodes
    }
    graphs = split_stages(captured, node_segment)
    mine = [(graphs[k].module, ckpt) for k, (s, ckpt, _) in enumerate(segments) if s == stage]
    if not mine:
        raise ConfigError(f"stage {stage} is not in the plan (stages 0..{len(plan.stages) - 1})")
    batch = 2 * captured.input_shape[0]
    modules = [SubPipelined(m, batch) if sub_pipelined else m for m, _ in mine]
    return StageModule(modules, [c for _, c in mine])
