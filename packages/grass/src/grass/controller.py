"""``LayerwiseTuner``: a sampler, the gradient-norm meter and ``LayerwiseAdamW`` working together.

Per step: ``begin_step(step)`` (choose and unfreeze the layers), forward and backward (the meter's
hooks read the gradients), ``end_backward(step)`` (tell the sampler), ``optimizer.step()`` (a no-op
while probing). The plain loop in ``grass.train`` and the HF ``Trainer`` integration both drive it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from grass.importance import GradNormMeter
from grass.layers import EMBED_HEAD, layer_map
from grass.optimizer import LayerwiseAdamW
from grass.sampler import LayerSampler

__all__ = ["LayerwiseTuner", "unit_name"]


def unit_name(layer: int) -> str:
    return f"layer{layer}"


class LayerwiseTuner:
    """Layer-wise fine-tuning of ``model``: which layers train (``sampler``), measured by their
    gradients, updated by a ``LayerwiseAdamW`` that holds every layer from the start.

    ``embed_head="train"`` keeps the embeddings, head and final norm trainable throughout (LISA);
    ``"freeze"`` never trains them. ``optimizer_kwargs`` go to :class:`LayerwiseAdamW`.
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: LayerSampler,
        *,
        embed_head: str = "freeze",
        **optimizer_kwargs: Any,
    ) -> None:
        self.model, self.sampler, self.embed_head = model, sampler, embed_head
        self.lmap = layer_map(model)
        units = {unit_name(i): [p for _, p in ps] for i, ps in enumerate(self.lmap.layers)}
        units[EMBED_HEAD] = [p for _, p in self.lmap.embed_head]
        self.optimizer = LayerwiseAdamW(units, **optimizer_kwargs)
        self.meter = GradNormMeter([[p for _, p in ps] for ps in self.lmap.layers])
        self.probing = False
        self.active: tuple[int, ...] | None = ()
        self.switches = 0

    def begin_step(self, step: int) -> tuple[int, ...] | None:
        """Choose this step's layers (None while probing) and set ``requires_grad`` accordingly."""
        active = self.sampler.active(step)
        self.probing = active is None
        if active != self.active:
            layers = range(self.lmap.num_layers) if active is None else active
            units = [unit_name(i) for i in layers]
            if self.embed_head == "train" and active is not None:
                units.append(EMBED_HEAD)
            if active is not None and self.active not in (None, ()):
                self.switches += 1
            self.optimizer.set_active(units)
            self.active = active
        # while probing nothing is updated: a gradient is dropped as soon as it is measured
        self.meter.discard = self.probing
        self.optimizer.hold = self.probing
        return active

    def end_backward(self, step: int) -> torch.Tensor:
        """Hand the measured RMS gradients to the sampler; returns them."""
        rms = self.meter.take()
        self.sampler.observe(step, rms)
        return rms

    def step(self) -> None:
        """The optimizer step (a no-op while probing)."""
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "sampler": self.sampler.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "active": self.active,
            "switches": self.switches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.active = None if state["active"] is None else tuple(state["active"])
        self.switches = state["switches"]
        for g in self.optimizer.param_groups:
            on = g["unit"] in self.optimizer.active_units
            for p in g["params"]:
                p.requires_grad_(on)
