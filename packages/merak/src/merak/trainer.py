"""``MerakTrainer``: a ``transformers.Trainer`` that trains an unmodified HF causal LM in 3D parallel.

As in Merak, a single-process HF training script changes in a few lines. This script ::

    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(output_dir=out, per_device_train_batch_size=8, **settings)
    trainer = Trainer(model=model, args=args, train_dataset=dataset)
    trainer.train()

runs on four processes (``torchrun --nproc-per-node 4 train.py``), two data-parallel pipelines of
two stages, with these three lines changed (``settings``: the script's other training arguments) ::

    from merak.trainer import MerakArguments, MerakTrainer

    args = MerakArguments(output_dir=out, per_device_train_batch_size=2, microbatches=2, dp=2, pp=2, **settings)
    trainer = MerakTrainer(model=model, args=args, train_dataset=dataset)
    trainer.train()

Batch sizes follow Merak (and DeepSpeed): ``per_device_train_batch_size`` is the rows of one
micro-batch, each pipeline runs ``microbatches`` of them per optimizer step (the pipeline's gradient
accumulation, so HF's ``gradient_accumulation_steps`` stays 1), and the ``dp`` pipelines each read
their own slice of every batch: a step trains on ``per_device_train_batch_size * microbatches * dp``
rows, the batch of the single-process run above. The data order is HF's (same sampler, same seed).

The trainer parallelises the model at construction (``merak.parallel.parallelize`` over the torchrun
world; gloo on CPU, NCCL on CUDA) and overrides the narrowest hooks of ``Trainer``: the model is
never handed to accelerate (no DDP wrap), the optimizer is built over this rank's parameters, a
training step is one pipelined forward and backward, gradient clipping takes the norm over all
ranks, the logged loss is the whole batch's, and checkpoints are ``merak.checkpoint`` folders (an HF
export of the weights plus a sharded DCP checkpoint of model and optimizer under ``merak/``).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, get_args

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor, Replicate
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import seed_worker

from effcore.errors import ConfigError
from merak.checkpoint import export_hf, load, read_manifest, save
from merak.parallel import TORCH_SCHEDULES, ParallelModel, hf_name, parallelize
from merak.partition import Method
from merak.schedules import SCHEDULES

__all__ = ["MerakArguments", "MerakTrainer", "clip_grad_norm_"]

_CHECKPOINT = "merak"  # the DCP checkpoint's folder inside each HF checkpoint-<step> folder
_SCHEDULER = "scheduler.pt"


@dataclass
class MerakArguments(TrainingArguments):
    """``TrainingArguments`` plus the mesh and Merak's pipeline settings (a plain dataclass like its
    base, so ``HfArgumentParser`` reads them from the command line)."""

    dp: int = field(default=1, metadata={"help": "Data-parallel size (pipelines reading their own slice)."})
    tp: int = field(
        default=1, metadata={"help": "Tensor-parallel size (ranks sharing each stage's matrices)."}
    )
    pp: int = field(default=1, metadata={"help": "Pipeline-parallel size (stages)."})
    schedule: str = field(
        default="1f1b", metadata={"help": f"Pipeline schedule: {', '.join([*SCHEDULES, *TORCH_SCHEDULES])}."}
    )
    partition: str = field(
        default="time", metadata={"help": f"Stage balancing: {', '.join(get_args(Method))}."}
    )
    recompute_ratio: float | None = field(
        default=None, metadata={"help": "First stage's recomputed share of layers (stage-aware); None: none."}
    )
    microbatches: int | None = field(
        default=None,
        metadata={"help": "Micro-batches per step per pipeline (its gradient accumulation); None: pp."},
    )
    seq_length: int | None = field(
        default=None,
        metadata={"help": "Tokens per row (the pipeline's fixed shape); None: the first example's."},
    )

    def __post_init__(self) -> None:
        for name in ("dp", "tp", "pp"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.schedule not in SCHEDULES and self.schedule not in TORCH_SCHEDULES:
            raise ConfigError(
                f"unknown schedule {self.schedule!r}",
                hint=f"choose from {', '.join([*SCHEDULES, *TORCH_SCHEDULES])}",
            )
        if self.partition not in get_args(Method):
            raise ConfigError(
                f"unknown partition {self.partition!r}", hint=f"choose from {', '.join(get_args(Method))}"
            )
        self.microbatches = self.pp if self.microbatches is None else self.microbatches
        if self.microbatches < 1:
            raise ConfigError(f"microbatches must be >= 1, got {self.microbatches}")
        if self.gradient_accumulation_steps != 1:
            raise ConfigError(
                f"gradient_accumulation_steps={self.gradient_accumulation_steps}: the pipeline accumulates",
                hint="set microbatches instead (micro-batches per step) and leave gradient_accumulation_steps at 1",
            )
        unsupported = {
            "eval_strategy": self.eval_strategy != "no",  # a str enum or its value
            "load_best_model_at_end": self.load_best_model_at_end,
            "push_to_hub": self.push_to_hub,
        }
        for name, value in unsupported.items():
            if value:
                raise ConfigError(
                    f"MerakArguments does not support {name} yet", hint=f"leave {name} at its default"
                )
        if not torch.cuda.is_available():  # accelerate's multi-process CPU mode needs both
            self.use_cpu = True
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:
                self.ddp_backend = self.ddp_backend or "gloo"  # not MPI, which accelerate prefers
        super().__post_init__()

    @property
    def place_model_on_device(self) -> bool:
        # each rank keeps only its stage: the whole model is never moved
        return False


class _Pipeline(nn.Module):
    """What the Trainer sees as its wrapped model: this rank's stage (so ``train()``, ``zero_grad()``
    and ``parameters()`` act on what this rank trains). It is never called; training steps run the
    pipeline schedule."""

    def __init__(self, parallel: ParallelModel) -> None:
        super().__init__()
        self.stage = parallel.stage_module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a merak pipeline stage is run by its schedule (MerakTrainer.training_step)")


def clip_grad_norm_(pm: ParallelModel, max_norm: float) -> torch.Tensor:
    """The 2-norm of the whole model's gradient, every HF parameter counted once however it is
    split or replicated over the mesh; gradients are scaled so that it is at most ``max_norm``
    (``inf``: measure only). Every rank calls it and gets the norm before clipping."""
    dp, tp = pm.mesh["dp"].size(), pm.mesh["tp"].size()
    tied = {id(getattr(module, attr)): dist.get_world_size(group) for module, attr, group in pm.tied}
    grads, total = [], None
    for param in pm.parameters():
        grad = param.grad
        if grad is None:
            continue
        shards = 1
        if isinstance(grad, DTensor):
            if any(pl.is_partial() for pl in grad.placements):  # unreduced sums: reduce them first
                grad = grad.redistribute(
                    placements=[Replicate() if pl.is_partial() else pl for pl in grad.placements]
                )
            # every placement but Replicate splits the tensor (Shard, and FSDP's _StridedShard over TP)
            shards = math.prod(
                grad.device_mesh.size(i) for i, pl in enumerate(grad.placements) if not pl.is_replicate()
            )
        local = grad.to_local() if isinstance(grad, DTensor) else grad
        copies = dp * tp // shards * tied.get(id(param), 1)  # ranks holding this same piece
        square = torch.linalg.vector_norm(local.float()) ** 2 / copies
        total = square if total is None else total + square
        grads.append(
            param.grad.to_local() if isinstance(param.grad, DTensor) else param.grad
        )  # partial sums scale too
    total = torch.zeros((), device=pm.stage.device) if total is None else total
    dist.all_reduce(total)
    norm = total.sqrt()
    if max_norm < float("inf"):
        scale = (max_norm / (norm + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s rule
        with torch.no_grad():
            for local in grads:
                local.mul_(scale.to(local.dtype))
    return norm


def _join_world() -> None:
    """A one-process group when the script was not started by torchrun (mesh 1 x 1 x 1)."""
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def _seq_length(args: MerakArguments, dataset: Any) -> int:
    if args.seq_length is not None:
        return args.seq_length
    try:
        return len(dataset[0]["input_ids"])
    except (TypeError, KeyError, IndexError):
        raise ConfigError(
            "cannot read the sequence length from train_dataset[0]['input_ids']", hint="set seq_length"
        ) from None


class MerakTrainer(Trainer):
    """A ``Trainer`` that parallelises ``model`` over the ``(dp, tp, pp)`` mesh of its
    ``MerakArguments`` at construction; ``self.parallel`` is this rank's ``ParallelModel``."""

    def __init__(
        self, model: nn.Module | None = None, args: MerakArguments | None = None, **kwargs: Any
    ) -> None:
        if not isinstance(args, MerakArguments):
            raise ConfigError("MerakTrainer needs args=MerakArguments(...)")
        if model is None or kwargs.get("model_init") is not None:
            raise ConfigError("MerakTrainer needs model=... (model_init is not supported)")
        _join_world()
        self._seq = _seq_length(args, kwargs.get("train_dataset"))
        self.parallel = parallelize(
            model,
            (args.dp, args.tp, args.pp),
            microbatch=(args.per_device_train_batch_size, self._seq),
            microbatches=args.microbatches,
            schedule=args.schedule,
            partition=args.partition,  # type: ignore[arg-type]
            recompute_ratio=args.recompute_ratio,
            device=args.device,
        )
        self._pipeline = _Pipeline(self.parallel)
        super().__init__(model=model, args=args, **kwargs)
        self.model_wrapped = self._pipeline

    # ---- the model is this rank's stage, never wrapped by accelerate ----

    def _wrap_model(
        self, model: nn.Module, training: bool = True, dataloader: DataLoader | None = None
    ) -> nn.Module:
        # returning another module than self.model makes the Trainer skip accelerator.prepare(model)
        return self._pipeline

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        return super().create_optimizer(self._pipeline if model is None else model)

    def get_decay_parameter_names(self, model: nn.Module) -> list[str]:
        if model is not self._pipeline:
            return super().get_decay_parameter_names(model)
        decay = set(super().get_decay_parameter_names(self.model))  # decided on the HF model's modules
        return [n for n, _ in model.named_parameters() if hf_name(n) in decay]

    # ---- data: every pipeline reads its slice of HF's batches ----

    def get_total_train_batch_size(self, args: TrainingArguments) -> int:
        return self._train_batch_size * self.args.microbatches * self.args.dp

    def get_train_dataloader(self) -> DataLoader:
        """HF's loader of whole steps (same sampler and seed as a single-process run), of which this
        pipeline's ranks all read the slice of their data-parallel coordinate."""
        from accelerate.data_loader import prepare_data_loader

        if self.train_dataset is None:
            raise ConfigError("MerakTrainer.train needs a train_dataset")
        dataset, collator = (
            self.train_dataset,
            self._get_collator_with_removed_columns(self.data_collator, "training"),
        )
        sampler = (
            None
            if isinstance(dataset, torch.utils.data.IterableDataset)
            else self._get_train_sampler(dataset)
        )
        args = self.args
        loader = DataLoader(
            dataset,
            batch_size=self.get_total_train_batch_size(args),
            sampler=sampler,
            collate_fn=collator,
            drop_last=args.dataloader_drop_last,
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers,
            prefetch_factor=args.dataloader_prefetch_factor,
            worker_init_fn=partial(
                seed_worker, num_workers=args.dataloader_num_workers, rank=args.process_index
            ),
        )
        dp = self.parallel.mesh["dp"]
        return prepare_data_loader(
            loader,
            num_processes=dp.size(),
            process_index=dp.get_local_rank(),
            split_batches=True,  # each pipeline gets its contiguous slice of the step's rows
            use_seedable_sampler=args.accelerator_config.use_seedable_sampler,
            data_seed=args.data_seed,
        )

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        if self.args.include_num_input_tokens_seen not in ("no", False):
            self.state.num_input_tokens_seen += inputs["input_ids"].numel() * self.args.dp

    # ---- a step is one pipelined forward and backward ----

    def _rows(self, inputs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        extra = set(inputs) - {"input_ids", "labels", "attention_mask"}
        if extra:
            raise ConfigError(
                f"merak pipelines take input_ids and labels only; the batch also has {sorted(extra)}"
            )
        if "labels" not in inputs:
            raise ConfigError("the batch has no labels", hint="use a collator that sets them, e.g. "
                              "DataCollatorForLanguageModeling(tokenizer, mlm=False)")  # fmt: skip
        mask = inputs.get("attention_mask")
        if mask is not None and not bool(mask.all()):
            raise ConfigError(
                "merak pipelines run unpadded rows", hint="pack the data into full rows of seq_length"
            )
        ids, labels = inputs["input_ids"], inputs["labels"]
        shape = (self.args.per_device_train_batch_size * self.args.microbatches, self._seq)
        if tuple(ids.shape) != shape or tuple(labels.shape) != shape:
            raise ConfigError(
                f"a pipeline step takes {shape[0]} rows of {shape[1]} tokens, the batch is {tuple(ids.shape)}",
                hint="keep every row seq_length long and set dataloader_drop_last=True",
            )
        return ids.to(self.args.device), labels.to(self.args.device)

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None
    ) -> torch.Tensor:
        """Run the pipeline on this rank's rows; returns the whole step's mean loss on every rank."""
        self._pipeline.train()
        ids, labels = self._rows(inputs)
        loss = self.parallel.train_step(ids, labels)
        pm = self.parallel
        counts = pm.is_last and pm.mesh["tp"].get_local_rank() == 0  # one rank per pipeline reports
        total = torch.zeros((), device=self.args.device)
        if counts and loss is not None:
            total = loss.to(self.args.device) / self.args.dp
        dist.all_reduce(total)
        return total.detach()

    def _clip_grad_norm(self, model: nn.Module) -> torch.Tensor:
        return clip_grad_norm_(self.parallel, self.args.max_grad_norm)

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None) -> Any:
        return clip_grad_norm_(self.parallel, float("inf")) if grad_norm is None else grad_norm

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        raise ConfigError("MerakTrainer does not evaluate yet", hint="evaluate the saved model with Trainer")

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(
            "MerakTrainer does not predict yet", hint="predict with the saved model and Trainer"
        )

    # ---- checkpoints: an HF export plus merak.checkpoint's sharded model and optimizer ----

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Write the model as an HF folder (every rank calls it), with the tokenizer and arguments."""
        output_dir = output_dir or self.args.output_dir
        export_hf(self.parallel, output_dir)
        if self.args.should_save:
            if self.processing_class is not None:
                self.processing_class.save_pretrained(output_dir)
            torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _optimizer(self) -> torch.optim.Optimizer:
        return getattr(
            self.optimizer, "optimizer", self.optimizer
        )  # accelerate's wrapper holds the optimizer

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        save(
            self.parallel,
            Path(output_dir) / _CHECKPOINT,
            optimizer=self._optimizer(),
            step=self.state.global_step,
        )
        if self.args.should_save:
            torch.save(self.lr_scheduler.state_dict(), os.path.join(output_dir, _SCHEDULER))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        # the weights come back with the optimizer state (_load_optimizer_and_scheduler); check early
        read_manifest(Path(resume_from_checkpoint) / _CHECKPOINT)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None:
            return
        load(self.parallel, Path(checkpoint) / _CHECKPOINT, optimizer=self._optimizer())
        scheduler = Path(checkpoint) / _SCHEDULER
        if scheduler.is_file():
            self.lr_scheduler.load_state_dict(torch.load(scheduler, weights_only=True))
