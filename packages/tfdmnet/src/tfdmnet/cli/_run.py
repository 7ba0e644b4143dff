"""``tfdmnet train`` and ``tfdmnet eval``: training runs in a folder, resumed when run again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    console,
    err_console,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tfdmnet.cli._common import (
    ModelOpt,
    RunDirOpt,
    SpectrumOpt,
    ThreadsOpt,
    WidthOpt,
    check_run_dir,
    one_of,
    resolve_device,
    set_threads,
    with_spectrum,
)
from tfdmnet.data import DATASETS
from tfdmnet.models import EML_CHOICES
from tfdmnet.train import OPTIMIZERS, RECIPES


def train(
    model: ModelOpt = "lenet-tfdmnet",
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset", help=f"One of: {one_of(DATASETS)} (default: the preset's).", show_default=False
        ),
    ] = None,
    run_dir: Annotated[
        Path,
        typer.Option(
            "--run-dir", help="Folder for checkpoint.pt, log.jsonl and metrics.json.", callback=check_run_dir
        ),
    ] = Path("runs/tfdmnet"),
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe", help=f"One of: {one_of(RECIPES)} (default: <dataset>-cpu).", show_default=False
        ),
    ] = None,
    width: WidthOpt = 1.0,
    spectrum: SpectrumOpt = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Override the recipe's epochs.", min=1)
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Override the batch size.", min=1)
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the peak learning rate.")] = None,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help=f"One of: {one_of(OPTIMIZERS)}.", show_default=False)
    ] = None,
    augment: Annotated[
        bool | None,
        typer.Option(
            "--augment/--no-augment", help="Random crop + flip (cifar10 only; on by default in its recipes)."
        ),
    ] = None,
    limit_train: Annotated[
        int | None, typer.Option("--limit-train", help="Train on a seeded random subset of N images.", min=1)
    ] = None,
    holdout: Annotated[
        int | None,
        typer.Option(
            "--holdout",
            help="Evaluate on N held-out training images instead of the test split (0: test).",
            min=0,
        ),
    ] = None,
    fix_every: Annotated[
        int | None,
        typer.Option(
            "--fix-every",
            help="Weight Fixation every N steps (free-weight EMLs, lenet-cemnet; 0: never).",
            min=0,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help=escape(
                f"TOML with an [eml] table ({one_of(EML_CHOICES)}) and a [recipe] table (any recipe field, "
                "seed included); the flags given on the command line override it."
            ),
        ),
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the run folder's checkpoint.")] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Random seed (default: the --config file's, else 0).", show_default=False
        ),
    ] = None,
    threads: ThreadsOpt = None,
    out: OutOpt = None,
) -> None:
    """Train a preset on MNIST or CIFAR-10: checkpoint every epoch, resume when run again."""
    from tfdmnet.models import get_preset
    from tfdmnet.train import get_recipe, load_overrides
    from tfdmnet.train import train as run_training

    cfg = get_preset(model, width=width)
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}", hint=f"choose one of {one_of(DATASETS)}")
    dataset = dataset or ("mnist" if cfg.in_channels == 1 else "cifar10")
    r = get_recipe(recipe or f"{dataset}-cpu")
    if r.dataset != dataset:
        raise ConfigError(f"recipe {recipe!r} is for {r.dataset}, not {dataset}")
    if config is not None:
        cfg, r = load_overrides(config, cfg, r)
    cfg = with_spectrum(cfg, spectrum)
    if fix_every is not None and not (cfg.has_eml and cfg.eml.parametrisation == "free"):
        raise ConfigError(
            f"--fix-every does not apply to {cfg.name}: Weight Fixation projects free-weight EMLs only",
            hint='drop --fix-every, or train lenet-cemnet (or [eml] parametrisation = "free")',
        )
    r = r.replace(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, augment=augment,
                  limit_train=limit_train, holdout=holdout, fix_every=fix_every, seed=seed)  # fmt: skip
    set_threads(threads)
    dev = resolve_device(device)
    console.print(f"[bold]{cfg.name}[/] on {dataset}, {r.epochs} epochs, batch {r.batch_size}, "
                  f"{r.optimizer} lr {r.lr}, seed {r.seed}, device {dev}, run {escape(str(run_dir))}")  # fmt: skip
    with progress_bar() as bar:
        tasks: dict[str, int] = {}
        split = "val" if r.holdout else "test"

        def on_event(kind: str, **info) -> None:
            if kind == "decode":
                if "decode" not in tasks:
                    tasks["decode"] = bar.add_task("decoding CIFAR-10 (once)", total=info["total"])
                bar.update(tasks["decode"], completed=info["done"])
            elif kind == "resume":
                err_console.print(f"resuming {run_dir} after epoch {info['epoch']}", markup=False)
            elif kind == "epoch_start":
                tasks["epoch"] = bar.add_task(f"epoch {info['epoch']}/{info['epochs']}", total=info["steps"])
            elif kind == "step":
                bar.update(tasks["epoch"], advance=1, description=f"loss {info['loss']:.3f}")
            elif kind == "epoch_end":
                accuracy = info[f"{split}_accuracy"]
                bar.update(tasks["epoch"], description=f"epoch {info['epoch']}: {split} {accuracy:.4f}")

        metrics = run_training(cfg, r, run_dir, data_dir=data_dir, device=dev, restart=restart,
                               on_event=on_event)  # fmt: skip
    rows = [dict(h) for h in metrics["history"]]
    console.print(render_table(f"{cfg.name} on {dataset}", rows))
    console.print(
        f"{split} accuracy [bold]{metrics[f'{split}_accuracy']:.4f}[/] after {metrics['epochs']} epochs "
        f"({metrics['train_seconds']:.0f} s of training); metrics in {escape(str(run_dir / 'metrics.json'))}"
    )
    write_out(out, metrics, rows=rows)


def evaluate_cmd(
    run_dir: RunDirOpt = Path("runs/tfdmnet"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.", min=1)] = 1000,
    out: OutOpt = None,
) -> None:
    """Test loss and accuracy of a run's checkpoint (deterministic eval mode)."""
    from tfdmnet.data import load_dataset
    from tfdmnet.train import evaluate, load_run, model_from_run

    dev = resolve_device(device)
    state = load_run(run_dir, map_location=dev)
    model = model_from_run(state, dev)
    test = load_dataset(state["recipe"]["dataset"], "test", data_dir=data_dir)
    spectrum = model.cfg.eml.spectrum if model.cfg.has_eml else None  # a CNN has no spectrum
    result = {"model": state["model"]["name"], "spectrum": spectrum,
              "dataset": state["recipe"]["dataset"], "epoch": state["epoch"],
              **evaluate(model, test, batch_size=batch_size, device=dev)}  # fmt: skip
    console.print(render_table(escape(str(run_dir)), [result]))
    write_out(out, result, rows=[result])
