"""Pipeline stages on ``torch.distributed.pipelining``: the stage module and Merak's schedule runner.

``StageModule`` runs a stage's graph segments: the first ``n(1 - r)`` shards plainly and the rest
under recomputation (Merak's stage-aware ratio ``r``), or the whole stage recomputed by an ``R``
instruction. ``MerakSchedule`` is a ``PipelineScheduleSingle`` that executes this stage's
instruction list (``merak.schedules``) with the library's own stage methods, so Merak's schedules
and torch's ``ScheduleGPipe``/``Schedule1F1B`` run on the same ``PipelineStage`` and are compared
like for like. Both record a trace (``Tracer``): when each forward, recompute and backward ran here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn
from torch.distributed.pipelining.schedules import PipelineScheduleSingle, _batch_p2p, _wait_batch_p2p

from merak.recompute import Recomputer
from merak.schedules import Ckpt, instructions

__all__ = ["MerakSchedule", "StageModule", "TraceEvent", "Tracer"]


class StageModule(nn.Module):
    """A stage's graph segments in order; ``checkpointed[i]`` marks those recomputed in backward."""

    def __init__(self, segments: Sequence[nn.Module], checkpointed: Sequence[bool]) -> None:
        super().__init__()
        self.segments = nn.ModuleList(segments)
        self.checkpointed = tuple(checkpointed)
        self.recomputer = Recomputer()
        self.mode: Ckpt = "stage"

    def _run(self, *inputs: Any, stage_ckpt: bool) -> Any:
        values: tuple = inputs
        out: Any = None
        for segment, ckpt in zip(self.segments, self.checkpointed, strict=True):
            out = self.recomputer.run(segment, *values) if (ckpt and stage_ckpt) else segment(*values)
            values = out if isinstance(out, tuple) else (out,)
        return out

    def forward(self, *inputs: Any) -> Any:
        if self.mode == "full":
            return self.recomputer.run(lambda *xs: self._run(*xs, stage_ckpt=False), *inputs)
        return self._run(*inputs, stage_ckpt=self.mode == "stage")


@dataclass(frozen=True, kw_only=True, slots=True)
class TraceEvent:
    """One compute instruction on this rank: seconds from the step's start (which the pipeline's
    ranks share: :meth:`Tracer.start` runs after a barrier), and the time spent waiting for its input
    (activation or gradient) before it could start (measured by Merak's schedules only)."""

    op: str
    mb: int
    start: float
    end: float
    wait: float

    def to_dict(self) -> dict:
        return asdict(self)


class Tracer:
    """Collects a step's :class:`TraceEvent` s; ``start()`` sets the origin and clears the last step."""

    def __init__(self) -> None:
        self.events: list[TraceEvent] = []
        self.origin = time.perf_counter()

    def start(self) -> None:
        self.events = []
        self.origin = time.perf_counter()

    def record(self, op: str, mb: int, start: float, end: float, waited_from: float | None = None) -> None:
        wait = 0.0 if waited_from is None else start - waited_from
        self.events.append(
            TraceEvent(op=op, mb=mb, start=start - self.origin, end=end - self.origin, wait=wait)
        )

    def wrap(self, stage: Any) -> None:
        """Record ``stage``'s forward and backward chunks under any schedule (torch's included)."""
        forward, backward = stage.forward_one_chunk, stage.backward_one_chunk

        def timed(op: str, fn: Any) -> Any:
            def run(mb: int, *args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                out = fn(mb, *args, **kwargs)
                self.record(op, mb, start, time.perf_counter())
                return out

            return run

        stage.forward_one_chunk = timed("F", forward)
        stage.backward_one_chunk = timed("B", backward)


class MerakSchedule(PipelineScheduleSingle):
    """Run ``kind`` (see ``merak.schedules.SCHEDULES``) on one ``PipelineStage`` per rank."""

    def __init__(
        self,
        stage: Any,
        n_microbatches: int,
        loss_fn: Any,
        *,
        kind: str,
        tracer: Tracer | None = None,
        **kwargs: Any,
    ) -> None:
        self.kind = kind
        self.instrs = instructions(kind, stage.stage_index, stage.num_stages, n_microbatches)
        super().__init__(stage, n_microbatches, loss_fn, **kwargs)
        self.tracer = tracer or Tracer()

    def _step_microbatches(
        self,
        arg_mbs: list | None = None,
        kwarg_mbs: list | None = None,
        target_mbs: list | None = None,
        losses: list | None = None,
        return_outputs: bool = True,
        loss_kwargs: dict[str, Any] | None = None,
    ) -> None:
        arg_mbs, kwarg_mbs = self._check_inputs(arg_mbs, kwarg_mbs, target_mbs, losses)
        self._initialize_stage(arg_mbs[0], kwarg_mbs[0], target_mbs[0] if target_mbs else None, loss_kwargs)
        stage, module = self._stage, self._stage.submod
        sends: list = []
        last_b = max(i for i, ins in enumerate(self.instrs) if ins.op == "B") if self._has_backward else -1
        for index, ins in enumerate(self.instrs):
            if ins.op == "B" and not self._has_backward:
                continue
            waited = time.perf_counter()
            if ins.op == "F":
                _wait_batch_p2p(_batch_p2p(stage.get_fwd_recv_ops(ins.mb), desc="fwd_recv"))
            elif ins.op == "B":
                _wait_batch_p2p(_batch_p2p(stage.get_bwd_recv_ops(ins.mb), desc="bwd_recv"))
            start = time.perf_counter()
            if ins.op == "F":
                module.mode = ins.ckpt
                module.recomputer.microbatch = ins.mb
                output = stage.forward_one_chunk(ins.mb, arg_mbs[ins.mb], kwarg_mbs[ins.mb],
                                                 save_forward_output=return_outputs)  # fmt: skip
                if stage.is_last and target_mbs is not None:  # eval() runs without targets
                    self._maybe_compute_loss(stage, output, target_mbs, ins.mb, loss_kwargs)
                sends += _batch_p2p(stage.get_fwd_send_ops(ins.mb), desc="fwd_send")
            elif ins.op == "R":
                module.recomputer.recompute(ins.mb)
            else:
                loss = self._maybe_get_loss(stage, ins.mb)
                stage.backward_one_chunk(ins.mb, loss=loss, last_backward=index == last_b)
                module.recomputer.release(ins.mb)
                sends += _batch_p2p(stage.get_bwd_send_ops(ins.mb), desc="bwd_send")
            self.tracer.record(ins.op, ins.mb, start, time.perf_counter(), waited)
        _wait_batch_p2p(sends)
        module.mode = "stage"
        self._update_losses(stage, losses)
        if self._has_backward:
            stage.perform_reduce_grad(self._n_microbatches if self.scale_grads else 1)
