"""``merak.parallelize``: one call turns an unmodified HF causal LM into a (dp, tp, pp)-parallel model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe
from torch.distributed.tensor import DTensor

from effcore.device import DeviceSpec, infer_device
from effcore.errors import ConfigError
from merak.capture import CapturedModel, capture
from merak.partition import Method
from merak.pipeline import MerakSchedule, StageModule, TraceEvent, Tracer
from merak.plan import PipelinePlan, build_stage_module, plan_pipeline
from merak.schedules import SCHEDULES
from merak.tp import apply_tensor_parallel

__all__ = [
    "MESH_DIMS",
    "TORCH_SCHEDULES",
    "ParallelModel",
    "causal_lm_loss",
    "hf_name",
    "make_mesh",
    "parallelize",
]

MESH_DIMS = ("pp", "dp", "tp")  # outermost to innermost: tensor-parallel ranks are neighbours
TORCH_SCHEDULES = {"torch-gpipe": ScheduleGPipe, "torch-1f1b": Schedule1F1B}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy (HF's shift: position t predicts label t + 1; -100 is ignored)."""
    return F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def make_mesh(shape: Sequence[int], device: torch.device | None = None) -> DeviceMesh:
    """A DeviceMesh of ``(dp, tp, pp)`` over the initialised world, laid out ``pp x dp x tp``."""
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"mesh must be three positive sizes (dp, tp, pp), got {tuple(shape)}")
    dp, tp, pp = shape
    world = dist.get_world_size()
    if dp * tp * pp != world:
        raise ConfigError(
            f"mesh (dp={dp}, tp={tp}, pp={pp}) needs {dp * tp * pp} ranks but the world has {world}",
            hint="make dp * tp * pp equal the number of processes (torchrun --nproc-per-node)",
        )
    kind = (device or infer_device("auto")).type
    return init_device_mesh(kind, (pp, dp, tp), mesh_dim_names=MESH_DIMS)


@dataclass(kw_only=True)
class ParallelModel:
    """This rank's share of a parallelised model: its stage, schedule and plan."""

    model: nn.Module
    mesh: DeviceMesh
    plan: PipelinePlan
    stage_module: StageModule
    stage: PipelineStage
    schedule: Any
    microbatches: int
    tracer: Tracer = field(default_factory=Tracer)
    tied: list[tuple[nn.Module, str, Any]] = field(default_factory=list)
    tp_replicated: list[tuple[nn.Parameter, Any]] = field(default_factory=list)
    tp_plans: dict = field(default_factory=dict)

    @property
    def stage_index(self) -> int:
        return self.stage.stage_index

    @property
    def is_last(self) -> bool:
        return self.stage.is_last

    def parameters(self) -> list[nn.Parameter]:
        """The parameters this rank trains (its stage's, each once)."""
        return list(self.stage_module.parameters())

    def named_hf_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """This rank's parameters under every name the user's model gives them (a tied weight under
        both), e.g. ``model.layers.0.self_attn.q_proj.weight``."""
        return [(hf_name(name), p) for name, p in self.stage_module.named_parameters(remove_duplicate=False)]

    def full_tensors(self, *, grads: bool = False) -> dict[str, torch.Tensor]:
        """This rank's parameters (or their gradients) as whole tensors under the user model's names:
        tensor- and data-parallel shards gathered, fused q/k/v back in the model's own order."""
        from merak.tp import fused_order

        fused = {lp.module: lp for plans in self.tp_plans.values() for lp in plans if lp.chunks > 1}
        tp = self.mesh["tp"].size()
        out: dict[str, torch.Tensor] = {}
        for key, param in self.named_hf_parameters():  # tied: under both names
            value = param.grad if grads else param.detach()
            if value is None:
                continue
            full = value.full_tensor() if isinstance(value, DTensor) else value
            module, attr = key.rsplit(".", 1)
            if module in fused:
                lp = fused[module]
                dim = 0 if attr == "bias" or lp.kind == "linear" else 1
                order = fused_order(full.shape[dim], lp.chunks, tp)
                full = torch.empty_like(full).index_copy_(dim, order, full)
            out[key] = full.detach().clone()
        return out

    @property
    def trace(self) -> list[TraceEvent]:
        """The last step's compute events on this rank (see :class:`merak.pipeline.TraceEvent`)."""
        return self.tracer.events

    def train_step(self, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """Forward and backward of one batch (split into ``microbatches``); gradients land in the
        parameters' ``.grad``, averaged over micro-batches. Returns the mean loss on the last stage."""
        losses: list[torch.Tensor] = []
        dist.barrier(group=self.mesh["pp"].get_group())  # the pipeline's ranks start the trace together
        self.tracer.start()
        first, last = self.stage.is_first, self.stage.is_last
        self.schedule.step(
            *((input_ids,) if first else ()), target=labels if last else None, losses=losses if last else None
        )
        for param, group in self.tp_replicated:  # partial sums over this rank's heads
            if param.grad is not None:
                dist.all_reduce(param.grad, group=group)
        for mod, attr, group in self.tied:  # a weight two stages hold (tied embeddings) sums its grads
            grad = getattr(mod, attr).grad
            if grad is not None:
                dist.all_reduce(grad.to_local() if isinstance(grad, DTensor) else grad, group=group)
        return torch.stack(losses).mean().detach() if last else None


def hf_name(name: str) -> str:
    """A stage module's parameter name -> the user's model's (``segments.0.hf.lm_head.weight`` -> ``lm_head.weight``)."""
    return name.split(".hf.", 1)[1]


def _tied_weights(
    model: nn.Module, plan: PipelinePlan, mesh: DeviceMesh, stage: int
) -> list[tuple[nn.Module, str, Any]]:
    """Weights that two stages both hold (tied input and output embeddings): for this rank, the
    ``(module, attribute)`` that holds each and the process group of the pipeline ranks (same dp
    and tp coordinates) that hold it. Call before FSDP replaces the parameters."""
    holders: dict[int, dict[int, tuple[nn.Module, str]]] = {}
    for st in plan.stages:
        for i in range(st.first, st.last + 1):
            for leaf in plan.shards[i].leaves:
                for mod in model.get_submodule(leaf).modules():
                    for attr, p in mod.named_parameters(recurse=False):
                        holders.setdefault(id(p), {}).setdefault(st.index, (mod, attr))
    columns = mesh.mesh.reshape(mesh.mesh.shape[0], -1)  # [pp, dp * tp]: one pipeline per column
    tied = []
    for by_stage in sorted((h for h in holders.values() if len(h) > 1), key=lambda h: sorted(h)):
        group = None
        for column in range(columns.shape[1]):  # every rank creates every group, in the same order
            ranks = sorted(int(columns[s, column]) for s in by_stage)
            created = dist.new_group(ranks)
            if dist.get_rank() in ranks:
                group = created
        if stage in by_stage:
            tied.append((*by_stage[stage], group))
    return tied


def parallelize(
    model: nn.Module,
    mesh: DeviceMesh | Sequence[int],
    *,
    microbatch: tuple[int, int],
    microbatches: int,
    schedule: str = "1f1b",
    partition: Method = "time",
    recompute_ratio: float | Sequence[float] | None = None,
    shard_count: int | None = None,
    spec: DeviceSpec | None = None,
    tp_overlap: bool = False,
    captured: CapturedModel | None = None,
    loss_fn: Any = causal_lm_loss,
    device: str | torch.device | None = None,
) -> ParallelModel:
    """Parallelise ``model`` over ``mesh`` ((dp, tp, pp) sizes or a DeviceMesh named pp/dp/tp).

    Every rank captures the whole model (on the meta device it costs no memory), plans the same
    pipeline (costs from FLOPs on ``spec``, default: the H100 datasheet, so ranks agree) and keeps
    its own stage. ``microbatch`` is one micro-batch's (batch, sequence) shape; ``schedule`` is one
    of ``merak.schedules.SCHEDULES`` or ``torch-gpipe``/``torch-1f1b`` (torch's own, the baselines).
    ``tp_overlap`` runs each micro-batch as two halves in lockstep so tensor-parallel all-reduces
    overlap compute (Merak's sub-pipelined TP; the micro-batch size must be even). ``captured``
    reuses a capture of this same, unmodified model at this micro-batch (pipeline-only runs).
    """
    from effcore.device import known_spec

    if schedule not in SCHEDULES and schedule not in TORCH_SCHEDULES:
        choices = ", ".join([*SCHEDULES, *TORCH_SCHEDULES])
        raise ConfigError(f"unknown schedule {schedule!r}", hint=f"choose from {choices}")
    dev = infer_device(device or "auto")
    mesh = mesh if isinstance(mesh, DeviceMesh) else make_mesh(mesh, dev)
    pp = mesh["pp"].size()
    stage_index = mesh["pp"].get_local_rank()
    if any(p.is_meta for p in model.parameters()):
        raise ConfigError(
            "the model is on the meta device: it can be partitioned and simulated, not trained",
            hint="load its weights first (merak.models.load_model(spec))",
        )
    batch, seq = microbatch
    if tp_overlap and batch % 2:
        raise ConfigError(f"tp_overlap splits each micro-batch in two: its size {batch} must be even")
    shape = (batch // 2, seq) if tp_overlap else (batch, seq)
    if captured is None:
        captured = capture(model, shape)
    elif captured.model is not model or captured.input_shape != shape:
        raise ConfigError(
            f"the given capture is of another model or shape ({captured.input_shape}, not {shape})"
        )
    plan = plan_pipeline(
        captured,
        pp,
        method=partition,
        shard_count=shard_count,
        recompute_ratio=recompute_ratio,
        schedule=schedule,
        spec=spec or known_spec("H100"),
    )
    module = build_stage_module(captured, plan, stage_index, sub_pipelined=tp_overlap).to(dev)
    tied = _tied_weights(model, plan, mesh, stage_index)
    mine = [leaf for i in range(plan.stages[stage_index].first, plan.stages[stage_index].last + 1)
            for leaf in plan.shards[i].leaves]  # fmt: skip
    tp_plans = apply_tensor_parallel(captured, mesh["tp"], mine)
    # parameters inside a split leaf that stay whole (q/k norms) see only this rank's heads
    tp_replicated = [
        p
        for leaf in tp_plans
        for p in captured.model.get_submodule(leaf).parameters()
        if not isinstance(p, DTensor)
    ]
    if mesh["dp"].size() > 1:
        from torch.distributed.fsdp import fully_shard

        fully_shard(module, mesh=mesh["dp"], reshard_after_forward=False)
    stage = PipelineStage(module, stage_index, pp, dev, group=mesh["pp"].get_group())
    tracer = Tracer()
    if schedule in TORCH_SCHEDULES:
        runner = TORCH_SCHEDULES[schedule](stage, microbatches, loss_fn=loss_fn)
        tracer.wrap(stage)
    else:
        runner = MerakSchedule(stage, microbatches, loss_fn, kind=schedule, tracer=tracer)
    pm = ParallelModel(
        model=model,
        mesh=mesh,
        plan=plan,
        stage_module=module,
        stage=stage,
        schedule=runner,
        microbatches=microbatches,
        tracer=tracer,
    )
    pm.tied = tied
    pm.tp_plans = tp_plans
    pm.tp_replicated = [(p, mesh["tp"].get_group()) for p in tp_replicated]
    return pm
