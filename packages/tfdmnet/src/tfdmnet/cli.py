"""The ``tfdmnet`` command line: train and evaluate TFDMNets, count operations, benchmark EMLs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    console,
    err_console,
    int_list,
    make_app,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError

app = make_app(
    "tfdmnet",
    "TFDMNet: convolutions replaced by element-wise multiplications in the frequency domain (EMLs).\n\n"
    "[bold]tfdmnet models[/]: the presets, their parameters and MACs\n\n"
    "[bold]tfdmnet train[/] -m lenet-tfdmnet --run-dir runs/a: MNIST, ~7 min on 2 CPU cores\n\n"
    "[bold]tfdmnet train[/] -m lenet-cnn --run-dir runs/b: its CNN twin, same recipe\n\n"
    "[bold]tfdmnet eval[/] --run-dir runs/a: test accuracy of a checkpoint\n\n"
    "[bold]tfdmnet ops[/] -m vgg16-mixture: per-layer op counts against the CNN twin\n\n"
    "[bold]tfdmnet bench[/]: EML vs conv2d vs a plain FFT convolution, timed\n\n"
    "Data: --data-dir, $EFFML_DATA or ../shared/data (mnist/mnist.npz, cifar10/cifar10_jpg.tar.gz). "
    "An interrupted `train` resumes from its last epoch when run again.",
)

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Preset: lenet-tfdmnet, lenet-cemnet, lenet-cnn (MNIST); vgg16-mixture, vgg16-cnn "
        "(CIFAR-10); alexnet-mixture, alexnet-cnn (ImageNet shapes). See `tfdmnet models`.",
    ),
]
WidthOpt = Annotated[
    float, typer.Option("--width", help="Channel multiplier of the preset (e.g. 0.25 for CPU CIFAR runs).")
]
RunDirOpt = Annotated[
    Path, typer.Option("--run-dir", help="Folder for checkpoint.pt, log.jsonl and metrics.json.")
]
ThreadsOpt = Annotated[
    int | None, typer.Option("--threads", help="torch CPU threads (default: torch's choice).")
]


def _threads(n: int | None) -> None:
    if n is not None:
        import torch

        if n < 1:
            raise ConfigError(f"--threads must be >= 1, got {n}")
        torch.set_num_threads(n)


def _device(name: str):
    from effcore.device import infer_device

    return infer_device(name)


@app.command()
def models(width: WidthOpt = 1.0, out: OutOpt = None) -> None:
    """List the presets: image size, layers in each domain, parameters and inference MACs per image."""
    from tfdmnet.models import PRESETS, Freq, build_model
    from tfdmnet.ops import network_table

    rows = []
    for name in PRESETS:
        model = build_model(name, width=width)
        cfg = model.cfg
        n_freq = sum(isinstance(layer, Freq) for layer in cfg.layers)
        n_conv = sum(type(layer).__name__ == "Conv" for layer in cfg.layers)
        total = network_table(model)[-1]["measured_macs"]
        rows.append({
            "preset": name, "input": f"{cfg.in_channels}x{cfg.image_size}x{cfg.image_size}",
            "spatial_convs": n_conv, "emls": n_freq, "parameters": model.num_parameters(),
            "mmacs": total / 1e6,
        })  # fmt: skip
    console.print(render_table(f"tfdmnet presets (width {width})", rows))
    write_out(out, rows, rows=rows)


@app.command()
def train(
    model: ModelOpt = "lenet-tfdmnet",
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="mnist or cifar10 (default: the preset's).")
    ] = None,
    run_dir: RunDirOpt = Path("runs/tfdmnet"),
    recipe: Annotated[
        str | None,
        typer.Option("--recipe", help="mnist-cpu, cifar10-cpu or cifar10-paper (default: <dataset>-cpu)."),
    ] = None,
    width: WidthOpt = 1.0,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Override the recipe's epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Override the batch size.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Override the peak learning rate.")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="sgd, rmsprop or adamw.")] = None,
    augment: Annotated[
        bool | None, typer.Option("--augment/--no-augment", help="Random crop + flip (CIFAR).")
    ] = None,
    limit_train: Annotated[
        int | None, typer.Option("--limit-train", help="Train on a seeded random subset of N images.")
    ] = None,
    holdout: Annotated[
        int | None,
        typer.Option("--holdout", help="Evaluate on N held-out training images instead of the test split."),
    ] = None,
    fix_every: Annotated[
        int | None, typer.Option("--fix-every", help="Weight Fixation every N steps (free EMLs; 0: never).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="TOML with [eml] (spectrum, nonlinearity, parametrisation, convention, anchor, ...) and "
            "[recipe] (any recipe field) tables; the flags above override it.",
        ),
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="Discard the run folder's checkpoint.")] = False,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
    out: OutOpt = None,
) -> None:
    """Train a preset on MNIST or CIFAR-10: checkpoint every epoch, resume when run again."""
    from tfdmnet.models import get_preset
    from tfdmnet.train import get_recipe, load_overrides
    from tfdmnet.train import train as run_training

    _threads(threads)
    cfg = get_preset(model, width=width)
    dataset = dataset or ("mnist" if cfg.in_channels == 1 else "cifar10")
    r = get_recipe(recipe or f"{dataset}-cpu")
    if r.dataset != dataset:
        raise ConfigError(f"recipe {recipe!r} is for {r.dataset}, not {dataset}")
    if config is not None:
        cfg, r = load_overrides(config, cfg, r)
    r = r.replace(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, augment=augment,
                  limit_train=limit_train, holdout=holdout, fix_every=fix_every, seed=seed)  # fmt: skip
    dev = _device(device)
    console.print(f"[bold]{cfg.name}[/] on {dataset}, {r.epochs} epochs, batch {r.batch_size}, "
                  f"{r.optimizer} lr {r.lr}, device {dev}, run {run_dir}")  # fmt: skip
    with progress_bar() as bar:
        tasks: dict[str, int] = {}

        def on_event(kind: str, **info) -> None:
            if kind == "decode":
                if "decode" not in tasks:
                    tasks["decode"] = bar.add_task("decoding CIFAR-10 (once)", total=info["total"])
                bar.update(tasks["decode"], completed=info["done"])
            elif kind == "resume":
                err_console.print(f"resuming {run_dir} after epoch {info['epoch']}")
            elif kind == "epoch_start":
                tasks["epoch"] = bar.add_task(f"epoch {info['epoch']}/{info['epochs']}", total=info["steps"])
            elif kind == "step":
                bar.update(tasks["epoch"], advance=1, description=f"loss {info['loss']:.3f}")
            elif kind == "epoch_end":
                bar.update(
                    tasks["epoch"], description=f"epoch {info['epoch']}: test {info['test_accuracy']:.4f}"
                )

        metrics = run_training(cfg, r, run_dir, data_dir=data_dir, device=dev, restart=restart,
                               on_event=on_event)  # fmt: skip
    rows = [{k: v for k, v in h.items()} for h in metrics["history"]]
    console.print(render_table(f"{cfg.name} on {dataset}", rows))
    split = metrics["eval_split"]
    console.print(
        f"{split} accuracy [bold]{metrics[f'{split}_accuracy']:.4f}[/] after {metrics['epochs']} epochs "
        f"({metrics['train_seconds']:.0f} s of training); metrics in {run_dir / 'metrics.json'}"
    )
    write_out(out, metrics, rows=rows)


@app.command("eval")
def evaluate_cmd(
    run_dir: RunDirOpt = Path("runs/tfdmnet"),
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 1000,
    out: OutOpt = None,
) -> None:
    """Test loss and accuracy of a run's checkpoint (deterministic eval mode)."""
    from tfdmnet.data import load_dataset
    from tfdmnet.train import evaluate, load_run, model_from_run

    dev = _device(device)
    state = load_run(run_dir, map_location=dev)
    model = model_from_run(state, dev)
    test = load_dataset(state["recipe"]["dataset"], "test", data_dir=data_dir)
    result = {"model": state["model"]["name"], "dataset": state["recipe"]["dataset"], "epoch": state["epoch"],
              **evaluate(model, test, batch_size=batch_size, device=dev)}  # fmt: skip
    console.print(render_table(f"{run_dir}", [result]))
    write_out(out, result, rows=[result])


@app.command()
def ops(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="A preset: per-block counts beside its CNN twin.")
    ] = None,
    width: WidthOpt = 1.0,
    sweep: Annotated[bool, typer.Option("--sweep", help="EML vs conv over sizes and kernels.")] = False,
    sizes: Annotated[str, typer.Option("--sizes", help="Sweep: feature-map sizes.")] = "4,8,14,16,28,32,64",
    kernels: Annotated[str, typer.Option("--kernels", help="Sweep: kernel sizes.")] = "3,5,7",
    channels: Annotated[str, typer.Option("--channels", help="Sweep: channels in = out.")] = "64",
    spectrum: Annotated[str, typer.Option("--spectrum", help="half (rfft2) or full (fft2).")] = "half",
    out: OutOpt = None,
) -> None:
    """Operation counts (MACs, one image, inference): analytic and measured by FlopCounterMode."""
    from tfdmnet.models import build_model as build
    from tfdmnet.models import get_preset
    from tfdmnet.ops import network_table, sweep_table

    if sweep or model is None:
        rows = sweep_table(sizes=int_list(sizes, "--sizes"), kernels=int_list(kernels, "--kernels"),
                           channels=int_list(channels, "--channels"), spectrum=spectrum)  # fmt: skip
        console.print(render_table(f"EML vs conv2d, MACs per image ({spectrum} spectrum)", rows))
        write_out(out, rows, rows=rows)
        return
    cfg = get_preset(model, width=width)
    ours, twin = network_table(build(cfg)), network_table(build(cfg.cnn_twin()))
    console.print(render_table(f"{cfg.name}: MACs per image", ours))
    console.print(render_table(f"{cfg.cnn_twin().name}: MACs per image", twin))
    a, b = ours[-1]["measured_macs"], twin[-1]["measured_macs"]
    console.print(f"{cfg.name}: {a / 1e6:.2f} MMACs, CNN twin {b / 1e6:.2f} MMACs: ratio {b / a:.2f}x")
    payload = {"model": cfg.name, "blocks": ours, "twin": cfg.cnn_twin().name, "twin_blocks": twin}
    write_out(
        out, payload, rows=[{"net": cfg.name, **r} for r in ours] + [{"net": "twin", **r} for r in twin]
    )


@app.command()
def bench(
    sizes: Annotated[str, typer.Option("--sizes", help="Feature-map sizes H = W.")] = "8,16,32",
    kernels: Annotated[str, typer.Option("--kernels", help="Kernel sizes.")] = "3,5,7",
    channels: Annotated[str, typer.Option("--channels", help="Channels in = out.")] = "64",
    batch: Annotated[int, typer.Option("--batch", help="Images per call.")] = 32,
    repeat: Annotated[int, typer.Option("--repeat", help="Timed calls per method (alternating).")] = 10,
    backend: Annotated[str, typer.Option("--backend", help="EML mixing: auto, triton, torch.")] = "auto",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    plot: Annotated[Path | None, typer.Option("--plot", help="Save a PNG of the speed ratios.")] = None,
    out: OutOpt = None,
) -> None:
    """Time EML, conv2d and a plain FFT convolution side by side; ratios are conv2d time / method time."""
    from tfdmnet.bench import bench_layers

    _threads(threads)
    cases = [(batch, c, hw, k) for c in int_list(channels, "--channels") for hw in int_list(sizes, "--sizes")
             for k in int_list(kernels, "--kernels") if k <= hw]  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task("benchmark cases", total=len(cases))
        rows = bench_layers(cases, repeat=repeat, device=_device(device), backend=backend,
                            on_case=lambda done, total: bar.update(task, completed=done))  # fmt: skip
    console.print(render_table("EML vs conv2d (vs_conv2d > 1: faster than conv2d)", rows))
    if plot:
        _plot_bench(rows, plot)
    write_out(out, rows, rows=rows)


def _plot_bench(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = sorted({r["mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        for method in ("eml", "eml_in_domain", "fft_conv"):
            for k in sorted({r["kernel"] for r in rows}):
                pts = sorted((r["size"], r["vs_conv2d"]) for r in rows
                             if r["mode"] == mode and r["method"] == method and r["kernel"] == k)  # fmt: skip
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=f"{method} k={k}")
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="feature-map size", ylabel="conv2d time / method time",
               title=mode)  # fmt: skip
        from matplotlib.ticker import NullFormatter, ScalarFormatter

        ax.set_xticks(sorted({r["size"] for r in rows}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    err_console.print(f"wrote {path}")
