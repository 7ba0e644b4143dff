"""``tfdmnet models``, ``ops`` and ``bench``: presets, operation counts and timings."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli import (
    DeviceOpt,
    OutOpt,
    PlotOpt,
    console,
    err_console,
    int_list,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from tfdmnet.cli._common import (
    SpectrumOpt,
    ThreadsOpt,
    WidthOpt,
    check_spectrum,
    one_of,
    resolve_device,
    set_threads,
    with_spectrum,
)
from tfdmnet.kernels.mixing import BACKENDS
from tfdmnet.models import PRESETS, EMLOptions


def models(width: WidthOpt = 1.0, spectrum: SpectrumOpt = None, out: OutOpt = None) -> None:
    """List the presets: image size, layers in each domain, parameters and inference MACs per image."""
    from tfdmnet.models import Freq, build_model, get_preset
    from tfdmnet.ops import network_table

    rows = []
    for name in PRESETS:
        cfg = get_preset(name, width=width)
        if cfg.has_eml:  # --spectrum applies to the mixtures; a CNN twin has no spectrum
            cfg = with_spectrum(cfg, spectrum)
        model = build_model(cfg)
        n_freq = sum(isinstance(layer, Freq) for layer in cfg.layers)
        n_conv = sum(type(layer).__name__ == "Conv" for layer in cfg.layers)
        total = network_table(model)[-1]["measured_macs"]
        rows.append({
            "preset": name, "input": f"{cfg.in_channels}x{cfg.image_size}x{cfg.image_size}",
            "spatial_convs": n_conv, "emls": n_freq, "parameters": model.num_parameters(), "mmacs": total / 1e6,
        })  # fmt: skip
    spec = check_spectrum(spectrum) or EMLOptions().spectrum
    console.print(render_table(f"tfdmnet presets (width {width}, EMLs on the {spec} spectrum)", rows))
    write_out(out, {"width": width, "spectrum": spec, "presets": rows}, rows=rows)


def ops(
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help=f"A preset ({one_of(PRESETS)}): per-block counts beside its CNN twin."
        ),
    ] = None,
    width: Annotated[
        float | None, typer.Option("--width", help="With -m: channel multiplier of the preset (default 1).")
    ] = None,
    sweep: Annotated[
        bool, typer.Option("--sweep", help="EML vs conv over sizes and kernels (the default without -m).")
    ] = False,
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="Sweep: feature-map sizes [default: 4,8,14,16,28,32,64].")
    ] = None,
    kernels: Annotated[
        str | None, typer.Option("--kernels", help="Sweep: kernel sizes [default: 3,5,7].")
    ] = None,
    channels: Annotated[
        str | None, typer.Option("--channels", help="Sweep: channels in = out [default: 64].")
    ] = None,
    spectrum: SpectrumOpt = None,
    out: OutOpt = None,
) -> None:
    """Operation counts (MACs, one image, inference): analytic and measured by FlopCounterMode.

    With -m: the preset's blocks (its EMLs on --spectrum, default the preset's) beside its CNN twin.
    With --sweep (or without -m): a lone EML against the conv it replaces (--spectrum, default half: a
    lone EML is the same map on either spectrum, the half at half the work).
    """
    from tfdmnet.models import build_model as build
    from tfdmnet.models import get_preset
    from tfdmnet.ops import network_table, sweep_table

    if model is not None and sweep:
        raise ConfigError("-m and --sweep are two modes", hint="give one: -m PRESET, or --sweep")
    if model is None:
        if width is not None:
            raise ConfigError(
                "--width applies to -m PRESET, not to the sweep", hint="drop --width, or give -m"
            )
        spec = check_spectrum(spectrum) or "half"
        rows = sweep_table(sizes=int_list(sizes or "4,8,14,16,28,32,64", "--sizes"),
                           kernels=int_list(kernels or "3,5,7", "--kernels"),
                           channels=int_list(channels or "64", "--channels"), spectrum=spec)  # fmt: skip
        if not rows:
            raise ConfigError("the sweep has no case: every kernel is larger than every size",
                              hint="give a kernel no larger than a size")  # fmt: skip
        console.print(render_table(f"EML vs conv2d, MACs per image ({spec} spectrum)", rows))
        write_out(out, {"spectrum": spec, "rows": rows}, rows=rows)
        return
    given = [flag for flag, value in (("--sizes", sizes), ("--kernels", kernels), ("--channels", channels))
             if value is not None]  # fmt: skip
    if given:
        raise ConfigError(
            f"{', '.join(given)} apply to --sweep, not to -m {model}", hint="drop them, or use --sweep"
        )
    cfg = with_spectrum(get_preset(model, width=1.0 if width is None else width), spectrum)
    ours, twin = network_table(build(cfg)), network_table(build(cfg.cnn_twin()))
    label = f"{cfg.name} ({cfg.eml.spectrum} spectrum)" if cfg.has_eml else cfg.name
    console.print(render_table(f"{label}: MACs per image", ours))
    console.print(render_table(f"{cfg.cnn_twin().name}: MACs per image", twin))
    a, b = ours[-1]["measured_macs"], twin[-1]["measured_macs"]
    console.print(f"{label}: {a / 1e6:.2f} MMACs, CNN twin {b / 1e6:.2f} MMACs: ratio {b / a:.2f}x")
    payload = {"model": cfg.name, "spectrum": cfg.eml.spectrum if cfg.has_eml else None, "blocks": ours,
               "twin": cfg.cnn_twin().name, "twin_blocks": twin}  # fmt: skip
    write_out(
        out, payload, rows=[{"net": cfg.name, **r} for r in ours] + [{"net": "twin", **r} for r in twin]
    )


def bench(
    sizes: Annotated[str, typer.Option("--sizes", help="Feature-map sizes H = W.")] = "8,16,32",
    kernels: Annotated[
        str, typer.Option("--kernels", help="Kernel sizes (each case needs kernel <= size).")
    ] = "3,5,7",
    channels: Annotated[str, typer.Option("--channels", help="Channels in = out.")] = "64",
    batch: Annotated[int, typer.Option("--batch", help="Images per call.", min=1)] = 32,
    repeat: Annotated[
        int, typer.Option("--repeat", help="Timed calls per method (alternating).", min=1)
    ] = 10,
    backend: Annotated[
        str, typer.Option("--backend", help=f"EML channel mixing, one of: {one_of(BACKENDS)}.")
    ] = "auto",
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    plot: PlotOpt = None,
    out: OutOpt = None,
) -> None:
    """Time EML, conv2d and a plain FFT convolution side by side; ratios are conv2d time / method time.

    Inference (fwd) reuses filter spectra computed once in both frequency-domain methods; a training
    step (fwd+bwd) transforms the kernels on every call in both. The JSON output records the machine.
    """

    from effcore.provenance import run_meta
    from tfdmnet.bench import bench_layers, plot_bench

    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r} is not one of {one_of(BACKENDS)}")
    cases = [(batch, c, hw, k) for c in int_list(channels, "--channels") for hw in int_list(sizes, "--sizes")
             for k in int_list(kernels, "--kernels") if k <= hw]  # fmt: skip
    if not cases:
        raise ConfigError(
            "no bench case: every kernel is larger than every size", hint="give a kernel <= a size"
        )
    set_threads(threads)
    dev = resolve_device(device)
    with progress_bar() as bar:
        task = bar.add_task("benchmark cases", total=len(cases))
        rows = bench_layers(cases, repeat=repeat, device=dev, backend=backend,
                            on_case=lambda done, total: bar.update(task, completed=done))  # fmt: skip
    console.print(render_table("EML vs conv2d (vs_conv2d > 1: faster than conv2d)", rows))
    if plot:
        plot_bench(rows, plot)
        err_console.print(f"wrote {plot}", markup=False)
    meta = {**run_meta(device=dev), "backend": backend, "repeat": repeat}
    write_out(out, {"meta": meta, "rows": rows}, rows=rows)
