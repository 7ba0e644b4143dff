"""GrassTrainer: the optimizer knows every layer from the start, so a layer first unfrozen at step
500 really gets updated (LMFlow #726: with LISA's callback over a stock Trainer it never is)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from effcore.testing.tiny import tiny_model
from grass.hf import GrassTrainer
from grass.sampler import LayerSampler


class _Rows(Dataset):
    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 128, (n, 8), generator=gen)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class _SwitchAt(LayerSampler):
    """Layer 0 until ``at``, then layer 1 only."""

    def __init__(self, at: int) -> None:
        self.num_layers, self.at = 2, at

    def active(self, step: int) -> tuple[int, ...]:
        return (0,) if step < self.at else (1,)


def _args(tmp_path, steps: int) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=1, learning_rate=1e-3,
        lr_scheduler_type="constant", save_strategy="no", report_to=[], logging_strategy="no", use_cpu=True,
        disable_tqdm=True, dataloader_num_workers=0,
    )  # fmt: skip


def _layer1(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.model.layers[1].named_parameters()}


def test_a_layer_first_unfrozen_at_step_500_is_updated(tmp_path):
    model = tiny_model("llama").train()
    trainer = GrassTrainer(
        model=model, args=_args(tmp_path, 503), train_dataset=_Rows(64), sampler=_SwitchAt(500)
    )
    before: dict[str, torch.Tensor] = {}

    class Snapshot(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 499:
                before.update(_layer1(model))

    trainer.add_callback(Snapshot())
    trainer.train()
    after = _layer1(model)
    assert before, "the run did not reach step 500"
    changed = [n for n in after if not torch.equal(after[n], before[n])]
    assert len(changed) == len(after), f"only {changed} of layer 1 changed after step 500"
    assert "layer1" in trainer.tuner.optimizer.active_units
    assert {g["unit"] for g in trainer.optimizer.param_groups} >= {"layer0", "layer1", "embed_head"}


def test_lisa_callback_over_a_stock_trainer_never_updates_a_later_layer(tmp_path):
    """The bug GrassTrainer avoids, reproduced: the stock optimizer is built from the parameters
    that require gradients at train start, so unfreezing layer 1 later changes nothing."""
    model = tiny_model("llama").train()
    for p in model.model.layers[1].parameters():
        p.requires_grad_(False)

    class LisaCallback(TrainerCallback):  # LMFlow's DynamicLayerActivationCallback, switching at step 2
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 2:
                for p in model.model.layers[0].parameters():
                    p.requires_grad_(False)
                for p in model.model.layers[1].parameters():
                    p.requires_grad_(True)

    before = _layer1(model)
    trainer = Trainer(
        model=model, args=_args(tmp_path, 6), train_dataset=_Rows(16), callbacks=[LisaCallback()]
    )
    trainer.train()
    assert all(torch.equal(before[n], p) for n, p in _layer1(model).items())
