"""Training and evaluation: recipes, a deterministic loop, a checkpoint every epoch, exact resume.

A run lives in one folder: ``checkpoint.pt`` (written atomically after every epoch: weights, optimizer,
RNG state, history), ``log.jsonl`` (one line per epoch) and ``metrics.json`` (when the run ends).
Resuming restores everything, so an interrupted and resumed run ends with the same weights as an
uninterrupted one (on CPU; tested). A folder that holds a different run is refused, never overwritten.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch
import torch.nn.functional as F

from effcore.errors import ConfigError, EffmlError
from effcore.io import write_json
from tfdmnet.data import DATASETS, IMAGE_SHAPES, Dataset, ImageSet, augment_cifar, batches, load_dataset
from tfdmnet.models import NetConfig, TFDMNet

__all__ = [
    "OPTIMIZERS",
    "RECIPES",
    "SCHEDULES",
    "Recipe",
    "RunError",
    "cifar10_cpu",
    "cifar10_paper",
    "evaluate",
    "get_recipe",
    "load_overrides",
    "load_run",
    "lr_at",
    "mnist_cpu",
    "model_from_run",
    "train",
]

CHECKPOINT = "checkpoint.pt"
FORMAT = "tfdmnet-run/1"

Event = Callable[..., None]
Optimizer = Literal["sgd", "rmsprop", "adamw"]
Schedule = Literal["cosine", "constant"]
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
SCHEDULES: tuple[str, ...] = get_args(Schedule)


class RunError(EffmlError):
    """A run folder is unusable: it holds another run, or its checkpoint is corrupt."""


@dataclass(kw_only=True, slots=True)
class Recipe:
    """How to train: optimisation, schedule, augmentation, Weight Fixation; validated on creation."""

    dataset: Dataset
    epochs: int
    batch_size: int = 128
    optimizer: Optimizer = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    schedule: Schedule = "cosine"
    grad_clip: float | None = 15.0
    label_smoothing: float = 0.0
    augment: bool = False
    limit_train: int | None = None
    holdout: int = 0
    fix_every: int = 1
    eval_batch_size: int = 1000
    amp: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"Recipe.dataset={self.dataset!r} is not one of {', '.join(DATASETS)}")
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ConfigError(
                f"Recipe.epochs, batch_size and eval_batch_size must be >= 1 "
                f"(got {self.epochs}, {self.batch_size}, {self.eval_batch_size})"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"Recipe.optimizer={self.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"Recipe.schedule={self.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if not (0 < self.lr < math.inf and 0 <= self.weight_decay < math.inf and 0 <= self.momentum < 1):
            raise ConfigError(
                f"Recipe needs a finite lr > 0 and weight_decay >= 0, and 0 <= momentum < 1 "
                f"(got {self.lr}, {self.weight_decay}, {self.momentum})"
            )
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ConfigError(f"Recipe.warmup_epochs={self.warmup_epochs} must be in [0, epochs]")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"Recipe.label_smoothing={self.label_smoothing} must be in [0, 1)")
        if self.fix_every < 0:
            raise ConfigError(f"Recipe.fix_every={self.fix_every} must be >= 0 (0: never)")
        if self.limit_train is not None and self.limit_train < 1:
            raise ConfigError(f"Recipe.limit_train={self.limit_train} must be >= 1")
        if self.holdout < 0:
            raise ConfigError(f"Recipe.holdout={self.holdout} must be >= 0 (0: evaluate on the test split)")
        if self.augment and self.dataset != "cifar10":
            # Random crop + horizontal flip: a flipped digit is another glyph (or none).
            raise ConfigError(
                f"Recipe.augment (random crop + flip) is for cifar10, not {self.dataset}",
                hint="drop --augment (or augment = true in [recipe])",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` (``None`` values are ignored, so CLI flags can pass through)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def mnist_cpu() -> Recipe:
    """MNIST on 2 CPU cores: SGD + Nesterov, cosine with 1 warm-up epoch, 20 epochs of batch 128."""
    return Recipe(dataset="mnist", epochs=20, batch_size=128, lr=0.05, weight_decay=5e-4)


def cifar10_cpu() -> Recipe:
    """CIFAR-10 on 2 CPU cores (use a narrow network, e.g. ``--width 0.25``): 15 epochs, augmentation."""
    return Recipe(dataset="cifar10", epochs=15, batch_size=128, lr=0.05, weight_decay=5e-4, augment=True)


def cifar10_paper() -> Recipe:
    """The authors' CIFAR-10 recipe for a GPU: RMSprop (momentum 0.9), lr 0.005, cosine + 1 warm-up
    epoch, 600 epochs of batch 100 (50 on each of 2 GPUs), grad-norm clip 15; we add augmentation
    (they used none; ``--no-augment`` restores that) and bf16 autocast (spectral ops stay fp32)."""
    return Recipe(
        dataset="cifar10", epochs=600, batch_size=100, optimizer="rmsprop", lr=0.005, momentum=0.9,
        weight_decay=5e-4, grad_clip=15.0, augment=True, amp=True,
    )  # fmt: skip


RECIPES: dict[str, Callable[[], Recipe]] = {
    "mnist-cpu": mnist_cpu,
    "cifar10-cpu": cifar10_cpu,
    "cifar10-paper": cifar10_paper,
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}", hint=f"choose one of {', '.join(RECIPES)}")
    return RECIPES[name]()


def load_overrides(path: str | Path, cfg: NetConfig, recipe: Recipe) -> tuple[NetConfig, Recipe]:
    """Apply a TOML file's ``[eml]`` (:class:`EMLOptions` fields) and ``[recipe]`` (:class:`Recipe`
    fields) tables; unknown tables or keys are errors that list the allowed ones."""
    import tomllib

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML ({err})") from None
    unknown = set(data) - {"eml", "recipe"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}", hint="use [eml] and [recipe]")
    for table, target in (("eml", cfg.eml), ("recipe", recipe)):
        allowed = {f.name for f in dataclasses.fields(target)}
        bad = set(data.get(table, {})) - allowed
        if bad:
            raise ConfigError(
                f"{path}: [{table}] has unknown keys {sorted(bad)}", hint=f"allowed: {sorted(allowed)}"
            )
    if data.get("eml"):
        if not cfg.has_eml:
            raise ConfigError(
                f"{path}: [eml] does not apply to {cfg.name}: it has no frequency-domain layers",
                hint="drop the [eml] table, or pick a mixture preset",
            )
        cfg = dataclasses.replace(cfg, eml=dataclasses.replace(cfg.eml, **data["eml"]))
    if data.get("recipe"):
        recipe = dataclasses.replace(recipe, **data["recipe"])
    return cfg, recipe


def _optimizer(model: torch.nn.Module, r: Recipe) -> torch.optim.Optimizer:
    # No weight decay on BatchNorm parameters and biases (1-D tensors), the usual practice.
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": r.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if r.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=r.lr, momentum=r.momentum, nesterov=r.momentum > 0)
    if r.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=r.lr, momentum=r.momentum)
    return torch.optim.AdamW(groups, lr=r.lr)


def lr_at(r: Recipe, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up over ``warmup_epochs``, then cosine decay to 0 (or constant)."""
    total = r.epochs * steps_per_epoch
    warm = int(r.warmup_epochs * steps_per_epoch)
    if step < warm:
        return r.lr * (step + 1) / warm
    if r.schedule == "constant":
        return r.lr
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * r.lr * (1 + math.cos(math.pi * min(1.0, progress)))


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )


@torch.no_grad()
def evaluate(
    model: TFDMNet, data: ImageSet, *, batch_size: int = 1000, device: torch.device | None = None,
    amp: bool = False,
) -> dict[str, float]:  # fmt: skip
    """Test loss and accuracy (eval mode: BN running stats, no dropout: deterministic)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    for images, labels in batches(data, batch_size):
        x, y = data.normalise(images.to(device)), labels.to(device)
        with _autocast(device, amp):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        correct += int((logits.argmax(1) == y).sum())
    model.train(was_training)
    n = max(1, len(data))
    return {"loss": loss_sum / n, "accuracy": correct / n, "errors": len(data) - correct}


def _run_identity(cfg: NetConfig, r: Recipe) -> dict[str, Any]:
    return {"format": FORMAT, "model": cfg.to_dict(), "recipe": r.to_dict()}


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_run(run_dir: str | Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint of a run folder (raises :class:`RunError` when missing or corrupt)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise RunError(f"no checkpoint in {run_dir}", hint="train first: tfdmnet train --run-dir DIR ...")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # torch raises many types for a damaged zip/pickle
        raise RunError(
            f"{path} is not a readable checkpoint ({type(err).__name__})",
            hint="delete the run folder or pass --restart",
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise RunError(f"{path} is not a tfdmnet checkpoint", hint="pass another --run-dir")
    return state


def _resumable_state(run_dir: Path, identity: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint to resume from (None for a new run); refuses a folder that holds another run."""
    if not (run_dir / CHECKPOINT).exists():
        return None
    state = load_run(run_dir)
    for key in ("model", "recipe"):
        if state[key] != identity[key]:
            diff = sorted(
                k for k in set(state[key]) | set(identity[key]) if state[key].get(k) != identity[key].get(k)
            )
            raise RunError(
                f"{run_dir} holds a different run ({key} differs in: {', '.join(diff)})",
                hint="pass a new --run-dir, the same settings, or --restart to discard it",
            )
    return state


def _start_run_dir(run_dir: Path, restart: bool) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    if restart:
        for name in (CHECKPOINT, "log.jsonl", "metrics.json"):
            (run_dir / name).unlink(missing_ok=True)


def train(
    cfg: NetConfig,
    recipe: Recipe,
    run_dir: str | Path,
    *,
    data_dir: str | Path | None = None,
    device: torch.device | str = "cpu",
    restart: bool = False,
    on_event: Event | None = None,
    train_set: ImageSet | None = None,
    test_set: ImageSet | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` with ``recipe`` in ``run_dir`` (resuming it when it holds the same run).

    Every epoch ends with an evaluation on the test split, or, with ``recipe.holdout > 0``, on that
    many training images held out (seeded) for model selection; the test split is then not touched.

    ``on_event(kind, **info)`` is called with ``"data"``, ``"epoch_start"``, ``"step"`` (every batch),
    ``"epoch_end"`` and ``"done"``: the CLI draws its progress bars from them. Returns the final metrics.
    """
    emit = on_event or (lambda kind, **info: None)
    device = torch.device(device)
    run_dir = Path(run_dir)
    identity = _run_identity(cfg, recipe)
    shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
    if shape != IMAGE_SHAPES[recipe.dataset]:
        raise ConfigError(
            f"{cfg.name} takes {'x'.join(map(str, shape))} images but {recipe.dataset} has "
            f"{'x'.join(map(str, IMAGE_SHAPES[recipe.dataset]))}",
            hint="pick a preset for this dataset (lenet-* for mnist, vgg16-* for cifar10)",
        )
    state = None if restart else _resumable_state(run_dir, identity)
    train_set = train_set or load_dataset(recipe.dataset, "train", data_dir=data_dir,
                                          progress=lambda d, t: emit("decode", done=d, total=t))  # fmt: skip
    if recipe.holdout:
        train_set, eval_set, split = *train_set.split(recipe.holdout, seed=recipe.seed), "val"
    else:
        eval_set = test_set or load_dataset(recipe.dataset, "test", data_dir=data_dir)
        split = "test"
    train_set = train_set.subset(recipe.limit_train, seed=recipe.seed)
    _start_run_dir(run_dir, restart)  # only now: a failed check or a missing dataset deletes nothing
    emit("data", train=len(train_set), eval=len(eval_set), split=split)

    torch.manual_seed(recipe.seed)
    model = TFDMNet(cfg).to(device)
    opt = _optimizer(model, recipe)
    steps_per_epoch = math.ceil(len(train_set) / recipe.batch_size)
    start_epoch, step, history = 0, 0, []
    if state is not None:
        model.load_state_dict(state["model_state"])
        opt.load_state_dict(state["optim_state"])
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and state["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(state["rng"]["cuda"], device)
        emit("resume", epoch=start_epoch)

    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        gen = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        emit("epoch_start", epoch=epoch + 1, epochs=recipe.epochs, steps=steps_per_epoch)
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for images, labels in batches(train_set, recipe.batch_size, shuffle=True, generator=gen):
            if recipe.augment:
                images = augment_cifar(images, gen)
            x, y = train_set.normalise(images.to(device)), labels.to(device)
            lr = lr_at(recipe, step, steps_per_epoch)
            for group in opt.param_groups:
                group["lr"] = lr
            with _autocast(device, recipe.amp):
                logits = model(x).float()
            loss = F.cross_entropy(logits, y, label_smoothing=recipe.label_smoothing)
            if not torch.isfinite(loss):
                raise RunError(
                    f"the loss became {loss.item()} at epoch {epoch + 1}, step {step}",
                    hint="lower --lr or keep --grad-clip; the last good checkpoint is kept",
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
            opt.step()
            step += 1
            if recipe.fix_every and step % recipe.fix_every == 0:
                model.fix_weights()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            emit("step", step=step, loss=loss.item(), lr=lr)
        train_seconds = time.perf_counter() - t0
        ev = evaluate(model, eval_set, batch_size=recipe.eval_batch_size, device=device, amp=recipe.amp)
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            f"{split}_loss": ev["loss"],
            f"{split}_accuracy": ev["accuracy"],
            "lr": lr,
            "seconds": train_seconds,
        }
        history.append(row)
        rng = {"torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}  # fmt: skip
        _save_checkpoint(
            run_dir / CHECKPOINT,
            {**identity, "epoch": epoch + 1, "step": step, "history": history, "rng": rng,
             "model_state": model.state_dict(), "optim_state": opt.state_dict()},
        )  # fmt: skip
        with open(run_dir / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        emit("epoch_end", **row)

    final = history[-1]
    metrics = {
        "model": cfg.name,
        "dataset": recipe.dataset,
        "epochs": recipe.epochs,
        "eval_split": split,
        f"{split}_accuracy": final[f"{split}_accuracy"],
        f"{split}_loss": final[f"{split}_loss"],
        f"best_{split}_accuracy": max(h[f"{split}_accuracy"] for h in history),
        "train_seconds": sum(h["seconds"] for h in history),
        "parameters": model.num_parameters(),
        "train_images": len(train_set),
        "history": history,
    }
    write_json(run_dir / "metrics.json", metrics)
    emit("done", **{k: v for k, v in metrics.items() if k != "history"})
    return metrics


def model_from_run(state: dict[str, Any], device: torch.device | str = "cpu") -> TFDMNet:
    """The trained network of a loaded checkpoint, in eval mode."""
    model = TFDMNet(NetConfig.from_dict(state["model"]))
    model.load_state_dict(state["model_state"])
    return model.to(device).eval()
