"""GRASS (and the other layer-wise methods) inside a ``transformers.Trainer``.

LMFlow's LISA callback unfreezes layers after the Trainer built its optimizer from the parameters
that required gradients at that moment, so a layer first sampled later is never updated (LMFlow
#726). ``GrassTrainer`` builds a :class:`LayerwiseAdamW` over every layer in ``create_optimizer``
and a callback chooses the layers at the start of each step; only the active layers are stepped,
and their state is offloaded when they leave. Under torchrun (DDP) the gradient norms are read from
DDP's all-reduce, as in the plain loop, so every rank samples the same layers. ::

    trainer = GrassTrainer(model=model, args=TrainingArguments(...), train_dataset=data,
                           sampler=GrassSampler(num_layers, GrassSettings(gamma=2)))
    trainer.train()
"""

from __future__ import annotations

from typing import Any

from torch.nn.parallel import DistributedDataParallel
from transformers import Trainer, TrainerCallback

from grass.controller import LayerwiseTuner
from grass.sampler import LayerSampler

__all__ = ["GrassCallback", "GrassTrainer"]


class GrassCallback(TrainerCallback):
    """Chooses the layers before each step and hands the measured gradients to the sampler."""

    def __init__(self, trainer: GrassTrainer) -> None:
        self.trainer = trainer

    def on_step_begin(self, args, state, control, **kwargs: Any) -> None:
        self.trainer.tuner.begin_step(state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs: Any) -> None:
        self.trainer.tuner.end_backward(state.global_step)


class GrassTrainer(Trainer):
    """A ``Trainer`` whose optimizer is a :class:`LayerwiseAdamW` over every layer from the start.

    ``sampler`` picks the layers (GRASS, static GRASS, LISA, BAdam); ``embed_head``, ``offload`` and
    ``on_switch`` are :class:`LayerwiseTuner`'s. AdamW's hyper-parameters come from the
    ``TrainingArguments`` (learning rate and its schedule, betas, epsilon, weight decay).
    """

    def __init__(
        self,
        *args: Any,
        sampler: LayerSampler,
        embed_head: str = "freeze",
        offload: str = "layerwise",
        on_switch: str = "resume",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._grass = {
            "sampler": sampler,
            "embed_head": embed_head,
            "offload": offload,
            "on_switch": on_switch,
        }
        self.tuner: LayerwiseTuner | None = None
        self.add_callback(GrassCallback(self))

    def create_optimizer(self, model=None):  # type: ignore[override]
        if self.optimizer is None:
            a = self.args
            self.tuner = LayerwiseTuner(
                self.model, self._grass["sampler"], embed_head=self._grass["embed_head"],
                lr=a.learning_rate, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon,
                weight_decay=a.weight_decay, offload=self._grass["offload"], on_switch=self._grass["on_switch"],
            )  # fmt: skip
            self.optimizer = self.tuner.optimizer
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):  # type: ignore[override]
        if isinstance(model, DistributedDataParallel):
            # the step's gradient is the all-reduced one: measured inside DDP's all-reduce, every rank
            # sees the same MGN and samples the same layers (the local gradients differ per rank)
            self.tuner.meter.ddp_comm_hook(model)
        # measure on the micro-batch that completes the step's gradient
        self.tuner.meter.armed = self.accelerator.sync_gradients
        return super().training_step(model, inputs, num_items_in_batch)
