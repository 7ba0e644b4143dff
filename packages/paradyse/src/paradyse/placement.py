"""Where a job runs: the device kind, the collective backend, and the peak memory read on it.

``--device auto`` picks CUDA when a GPU is present (``effcore.device.infer_device``, the one hardware
probe), the CPU otherwise; ``--backend auto`` picks NCCL on CUDA and gloo on the CPU. Pairs that
cannot run every strategy are refused before any rank starts: NCCL moves CUDA tensors only, and
gloo has no CUDA all-to-all (Ulysses) or CUDA point-to-point batches (ring attention). On CUDA every
rank takes its own GPU (``LOCAL_RANK``), so ``--nproc`` may not exceed the GPUs present.

:class:`PeakMemory` reads a step's peak from the CUDA caching allocator on a GPU and from
``torch.distributed._tools.MemTracker`` (live tensors) on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from effcore.device import infer_device
from effcore.errors import ConfigError
from paradyse.config import ModelConfig

__all__ = ["BACKENDS", "PeakMemory", "Placement", "resolve_placement"]

BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True, kw_only=True, slots=True)
class Placement:
    """A job's device kind (``"cpu"`` or ``"cuda"``) and its collective backend."""

    device: str
    backend: str

    def local_device(self) -> torch.device:
        """This rank's device: its own GPU (``LOCAL_RANK``) on CUDA, the CPU otherwise."""
        if self.device == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(dev)
            return dev
        return torch.device("cpu")

    def device_name(self) -> str | None:
        """The GPU's name for a profile's hardware id (None: the CPU's model is used)."""
        return torch.cuda.get_device_name(0) if self.device == "cuda" else None


def resolve_placement(device: str, backend: str, *, nproc: int, cfg: ModelConfig) -> Placement:
    """Resolve ``--device``/``--backend`` for ``nproc`` ranks of ``cfg``; one clear error when they cannot run."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown --backend {backend!r}", hint=f"choose one of {', '.join(BACKENDS)}")
    dev = infer_device(device)
    kind = dev.type
    if backend == "auto":
        backend = "nccl" if kind == "cuda" else "gloo"
    if backend == "nccl" and kind != "cuda":
        raise ConfigError(
            "--backend nccl needs --device cuda: NCCL moves CUDA tensors only, and this run is on the CPU",
            hint="use --backend gloo (or auto) on the CPU",
        )
    if backend == "gloo" and kind == "cuda":
        raise ConfigError(
            "--backend gloo cannot run the strategies on --device cuda: gloo has no CUDA all-to-all "
            "(ulysses) or point-to-point batches (ring attention)",
            hint="use --backend nccl (or auto) on GPUs, or --device cpu",
        )
    cfg.check_degree(nproc)
    if kind == "cuda":
        count = torch.cuda.device_count()
        if nproc > count:
            raise ConfigError(
                f"--nproc {nproc} needs {nproc} GPUs (one per rank); this machine has {count}",
                hint=f"use --nproc <= {count} with a degree that divides the heads ({cfg.heads}) "
                f"and KV heads ({cfg.kv_heads})",
            )
    return Placement(device=kind, backend=backend)


class PeakMemory:
    """``with PeakMemory(model, device): step()``, then ``.peak`` bytes (allocator on CUDA, tensors on CPU)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device, self.peak = device, 0
        self._tracker = None
        if device.type != "cuda":
            from torch.distributed._tools.mem_tracker import MemTracker

            self._tracker = MemTracker()
            self._tracker.track_external(model)

    def __enter__(self) -> PeakMemory:
        if self._tracker is not None:
            self._tracker.__enter__()
        else:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc) -> None:
        if self._tracker is not None:
            self._tracker.__exit__(*exc)
            snap = self._tracker.get_tracker_snapshot("peak").get(torch.device("cpu"), {})
            self.peak = int(max(snap.get("Total", 0), 0))
        else:
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
