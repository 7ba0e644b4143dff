"""What one profiled step saved for backward: slots, block calls and the order of their events."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

__all__ = ["BlockCall", "EventKind", "Slot", "StepTrace", "signature"]

# enter: a block call starts its forward; pack: a tensor is saved; unpack: backward reads it;
# free: autograd drops it (its node has run, or the graph was freed).
EventKind = Literal["enter", "pack", "unpack", "free"]


@dataclass(kw_only=True, slots=True)
class Slot:
    """One tensor saved for backward, in the order of saving (``index``)."""

    index: int
    block: int  # the block call that saved it; -1 outside every block (never released)
    position: int  # pack order inside its block call, parameters included (recompute replays it)
    storage: int  # logical storage id: slots sharing a storage share it
    nbytes: int  # bytes of the whole storage (what freeing it gives back)
    copy_nbytes: int  # bytes of the tensor brought back from host (its own view, strides kept)
    shape: tuple[int, ...]
    dtype: str
    op: str  # its producer: the autograd node that made it (grad_fn class), "input" for leaves
    prefix_s: float  # compute time from its block's start to the save: the cost of recomputing it
    pack_s: float  # time since the step started
    unpack_s: float | None = None  # first read in backward (None: never read)

    @property
    def gap_s(self) -> float:
        """Idle time between the save and the first use in backward (DELTA's g(t))."""
        return 0.0 if self.unpack_s is None else self.unpack_s - self.pack_s


@dataclass(kw_only=True, slots=True)
class BlockCall:
    """One call of a managed block's forward; recompute reruns it from its held tensor ``inputs``."""

    index: int
    name: str
    inputs: list[tuple[int, int]]  # (logical storage id, bytes) of its tensor arguments, held to recompute
    forward_s: float = 0.0
    random_ops: list[str] = field(default_factory=list)
    not_recomputable: str = ""  # why recompute would be wrong ("" when it is allowed)


@dataclass(kw_only=True, slots=True)
class StepTrace:
    """A profiled step: slots, block calls, events in order and the always-resident bytes."""

    signature: tuple
    slots: list[Slot]
    blocks: list[BlockCall]
    events: list[tuple[EventKind, int]]  # (kind, slot index) or ("enter", block index)
    static_bytes: int  # parameters + their gradients
    forward_s: float  # end of the forward (first unpack) since the step started
    step_s: float

    def group_slots(self) -> dict[int, list[Slot]]:
        """Slots by logical storage, in order of first save."""
        groups: dict[int, list[Slot]] = {}
        for slot in self.slots:
            groups.setdefault(slot.storage, []).append(slot)
        return groups

    def saved_bytes(self) -> int:
        """Bytes of unique storages saved for backward (what 'nothing released' holds at most)."""
        return sum(s[0].nbytes for s in self.group_slots().values())

    def block_saved_bytes(self, block: int) -> int:
        """Bytes of the unique storages block call ``block`` saved (one storage saved twice counts once)."""
        return sum({s.storage: s.nbytes for s in self.slots if s.block == block}.values())


def _describe(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), str(value.device), value.requires_grad)
    if isinstance(value, list | tuple):
        return tuple(_describe(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _describe(v)) for k, v in value.items()))
    return type(value).__name__


def signature(args: tuple, kwargs: dict) -> tuple:
    """What must match for a plan to be reused: every tensor argument's shape, dtype and device."""
    return (_describe(args), _describe(kwargs))
