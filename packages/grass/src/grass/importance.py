"""Per-layer gradient RMS, sqrt(||g_l||^2 / N_l), read from post-accumulate-grad hooks.

The hooks see each parameter's gradient once, right after autograd accumulated it, so the norms cost
no second pass over the gradients. With gradient accumulation only the last micro-batch's backward
is measured (``armed``), when ``.grad`` holds the whole step's gradient. Under DDP the local
gradient is not the step's gradient: :meth:`GradNormMeter.ddp_comm_hook` measures the averaged
buckets inside DDP's all-reduce instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GradNormMeter"]


class GradNormMeter:
    """Accumulates ``||g||^2`` per layer during a backward pass; :meth:`take` returns the RMS per layer.

    ``layers[l]`` are the parameters of layer ``l``. A layer none of whose parameters received a
    gradient this step (frozen) reports NaN: it was not measured.
    """

    def __init__(self, layers: Sequence[Sequence[nn.Parameter]]) -> None:
        self.numel = torch.tensor([sum(p.numel() for p in ps) for ps in layers], dtype=torch.float64)
        self._layer_of = {id(p): index for index, ps in enumerate(layers) for p in ps}
        self._sq: torch.Tensor | None = None  # on the gradients' device: no host sync per parameter
        self._seen = [False] * len(layers)
        self.armed = True  # measure the next backward (False on all but the last micro-batch)
        self.discard = False  # drop each gradient once measured (probing: nothing is updated)
        self._handles: list = []
        for ps in layers:
            for p in ps:
                self._handles.append(p.register_post_accumulate_grad_hook(self._hook))
        self._ddp: nn.parallel.DistributedDataParallel | None = None  # measuring in its comm hook

    def _add(self, p: nn.Parameter, grad: torch.Tensor) -> None:
        index = self._layer_of.get(id(p))
        if index is None:
            return
        if self._sq is None:
            self._sq = torch.zeros(len(self._seen), dtype=torch.float64, device=grad.device)
        norm = torch.linalg.vector_norm(grad.detach(), dtype=torch.float32).double()
        self._sq[index] += norm * norm
        self._seen[index] = True

    def _hook(self, p: nn.Parameter) -> None:
        if self.armed and self._ddp is None and p.grad is not None:
            self._add(p, p.grad)
            if self.discard:
                p.grad = None

    def take(self) -> torch.Tensor:
        """The RMS gradient of every layer since the last call (NaN where no gradient arrived); resets."""
        sq = torch.zeros_like(self.numel) if self._sq is None else self._sq.cpu()
        rms = torch.sqrt(sq / self.numel)
        rms[~torch.tensor(self._seen)] = float("nan")
        self._sq = None
        self._seen = [False] * len(self._seen)
        return rms

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def ddp_comm_hook(self, ddp: nn.parallel.DistributedDataParallel) -> None:
        """Measure the all-reduced gradients of ``ddp``'s buckets (the step's gradient) instead of
        each rank's local one; the all-reduce is DDP's default (sum, divided by the world size).
        Registering on the same ``ddp`` again does nothing (the HF integration calls it every step)."""
        if self._ddp is ddp:
            return
        self._ddp = ddp
        meter = self

        # no annotations: DDP compares them to dist.GradBucket, and they are strings here
        def hook(group, bucket):  # type: ignore[no-untyped-def]
            world = dist.get_world_size(group)
            tensor = bucket.buffer().div_(world)
            fut = dist.all_reduce(tensor, group=group, async_op=True).get_future()

            def measure(f: torch.futures.Future) -> torch.Tensor:
                reduced = f.value()[0]
                if meter.armed:
                    # views of the bucket's buffer, now averaged; frozen parameters are not measured
                    for p, grad in zip(bucket.parameters(), bucket.gradients(), strict=True):
                        if p.requires_grad:
                            meter._add(p, grad)
                return reduced

            return fut.then(measure)

        ddp.register_comm_hook(None, hook)
