"""The ``delta`` command line: profile a step, plan it under a budget, train with it, find max batches."""

from __future__ import annotations

from typing import Annotated

import torch
import typer

from delta.plan import BUDGETED, POLICIES, fmt_bytes
from effcore.cli import (
    DeviceOpt,
    OutOpt,
    PlotOpt,
    SeedOpt,
    console,
    int_list,
    make_app,
    parse_bytes,
    progress_bar,
    render_table,
    write_out,
)
from effcore.device import infer_device
from effcore.errors import ConfigError

app = make_app(
    "delta",
    "DELTA: keep, swap or recompute each tensor saved for backward, so a step fits a memory budget.\n\n"
    "  delta profile -m resnet50 --batch 8 --image-size 64     # what one step saves, block by block\n\n"
    "  delta plan -m resnet50 --batch 16 --budget 320MiB --plot m.png  # DELTA's plan and its memory\n\n"
    "  delta train -m tiny --batch 64 --budget 600KiB --steps 3  # train under the plan, gradients exact\n\n"
    "  delta maxbatch -m resnet50 --budget 320MiB               # every method's largest batch and speed\n\n"
    "  delta profile -m smollm2 --seq-len 128 --batch 8        # SmolLM2-135M on WikiText-2 sequences\n\n"
    "  delta evoformer --lengths 16,32                          # Evoformer memory/time per technique\n\n"
    "The budget counts parameters, gradients and the saved tensors resident on the device.",
)

MODEL_HELP = (
    "Model: tiny (test net), resnet50, resnet101 (torchvision, random init), evoformer (batch = residues), "
    "smollm2 (SmolLM2-135M, batch = sequences)."
)
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
BatchOpt = Annotated[int, typer.Option("--batch", "-b", help="Batch size (residues for the Evoformer).")]
ImageOpt = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        help="ResNet input side (CIFAR-10 is upscaled to it). Default 224.",
        show_default=False,
    ),
]
DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="Inputs: synthetic (default) or cifar10 (test images) for the ResNets; "
                 "smollm2 reads WikiText-2.", show_default=False),
]  # fmt: skip
SeqLenOpt = Annotated[
    int | None,
    typer.Option("--seq-len", help="smollm2: tokens per sequence. Default 128.", show_default=False),
]
BudgetOpt = Annotated[
    str | None,
    typer.Option("--budget", help="Memory budget, e.g. 4GiB or 320MiB (policies delta, capuchin, dtr).",
                 show_default=False),
]  # fmt: skip
PolicyOpt = Annotated[str, typer.Option("--policy", help=f"One of {', '.join(POLICIES)}.")]


def _positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def _case(model: str, data: str | None, image_size: int | None, seq_len: int | None, device: torch.device):
    from delta.models import build_model

    return build_model(model, data=data, image_size=image_size, seq_len=seq_len, device=device)


def _budget(text: str | None, policy: str) -> int | None:
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r}", hint=f"choose from {', '.join(POLICIES)}")
    if text is None:
        if policy in BUDGETED:
            raise ConfigError(f"policy {policy!r} needs --budget", hint="e.g. --budget 4GiB")
        return None
    if policy not in BUDGETED:
        raise ConfigError(
            f"--budget does not apply to policy {policy!r}", hint=f"use one of {', '.join(BUDGETED)}"
        )
    return parse_bytes(text, flag="--budget")


def _plot_memory(path, timeline: list[dict[str, int]], static: int, budget: int | None, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cats = ["kept", "swapped", "recomputed", "inputs"]
    xs = range(len(timeline))
    fig, ax = plt.subplots(figsize=(8, 4))
    base = [static / 2**20] * len(timeline)
    ax.fill_between(xs, 0, base, label="parameters + gradients", color="0.8")
    for cat in cats:
        top = [b + row.get(cat, 0) / 2**20 for b, row in zip(base, timeline, strict=True)]
        ax.fill_between(xs, base, top, label=cat)
        base = top
    if budget is not None:
        ax.axhline(budget / 2**20, color="k", ls="--", label="budget")
    ax.set(xlabel="event (save / read / free) in one step", ylabel="MiB on the device", title=title)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@app.command()
def profile(model: ModelOpt = "tiny", batch: BatchOpt = 8, image_size: ImageOpt = None, data: DataOpt = None,
            seq_len: SeqLenOpt = None, device: DeviceOpt = "auto", seed: SeedOpt = 0, out: OutOpt = None) -> None:  # fmt: skip
    """Profile one training step: every block's saved bytes, forward time and whether it can be recomputed."""
    from delta.bench import profile_trace

    _positive(batch=batch)
    dev = infer_device(device)
    torch.manual_seed(seed)
    case = _case(model, data, image_size, seq_len, dev)
    trace = profile_trace(case, batch, seed=seed, device=dev)
    rows = []
    for b in trace.blocks:
        slots = [s for s in trace.slots if s.block == b.index]
        rows.append({"block": b.name, "saved_tensors": len(slots), "saved_MiB": trace.block_saved_bytes(b.index) / 2**20,
                     "forward_ms": 1e3 * b.forward_s, "recompute": b.not_recomputable or "yes"})  # fmt: skip
    console.print(render_table(f"{model}, batch {batch}: one step", rows))
    console.print(f"saved for backward {fmt_bytes(trace.saved_bytes())}, parameters + gradients "
                  f"{fmt_bytes(trace.static_bytes)}, step {trace.step_s:.2f} s")  # fmt: skip
    write_out(out, {"model": model, "batch": batch, "saved_bytes": trace.saved_bytes(),
                    "static_bytes": trace.static_bytes, "blocks": rows}, rows=rows)  # fmt: skip


@app.command()
def plan(model: ModelOpt = "tiny", batch: BatchOpt = 8, budget: BudgetOpt = None, policy: PolicyOpt = "delta",
         image_size: ImageOpt = None, data: DataOpt = None, seq_len: SeqLenOpt = None, device: DeviceOpt = "auto",
         seed: SeedOpt = 0, out: OutOpt = None, plot: PlotOpt = None) -> None:  # fmt: skip
    """Profile one step and plan it: what is kept, swapped and recomputed, the projected peak."""
    from delta.bench import profile_trace
    from delta.plan import make_plan
    from effcore.device import device_spec

    _positive(batch=batch)
    limit = _budget(budget, policy)
    dev = infer_device(device)
    torch.manual_seed(seed)
    case = _case(model, data, image_size, seq_len, dev)
    trace = profile_trace(case, batch, seed=seed, device=dev)
    result = make_plan(trace, policy, limit, bandwidth=device_spec(dev).host_link_bandwidth,
                       prefetch=1 if dev.type == "cuda" else None, overlap=dev.type == "cuda")  # fmt: skip
    summary = result.summary()
    shown = [{"": k, "value": fmt_bytes(v) if k.endswith(("bytes", "peak", "minimum", "budget")) and v else v}
             for k, v in summary.items()]  # fmt: skip
    console.print(render_table(f"{policy} plan for {model}, batch {batch}", shown))
    write_out(out, {"model": model, "batch": batch, **summary}, rows=[summary])
    if plot is not None:
        _plot_memory(
            plot, result.projected.timeline, trace.static_bytes, limit, f"{model} b{batch}: {policy}"
        )


@app.command()
def train(model: ModelOpt = "tiny", batch: BatchOpt = 8, budget: BudgetOpt = None, policy: PolicyOpt = "delta",
          steps: Annotated[int, typer.Option("--steps", help="Training steps (SGD, lr 0.01).")] = 3,
          image_size: ImageOpt = None, data: DataOpt = None, seq_len: SeqLenOpt = None, device: DeviceOpt = "auto",
          seed: SeedOpt = 0, out: OutOpt = None, plot: PlotOpt = None) -> None:  # fmt: skip
    """Train under the plan: the first step profiles, the rest run the plan; loss, held peak, time per step."""
    from delta.api import Delta

    _positive(batch=batch, steps=steps)
    limit = _budget(budget, policy)
    dev = infer_device(device)
    torch.manual_seed(seed)
    case = _case(model, data, image_size, seq_len, dev)
    runner = Delta(
        case.model, policy=policy, budget=limit, blocks=case.blocks, device=dev, record=plot is not None
    )
    opt = torch.optim.SGD(case.model.parameters(), lr=0.01)
    inputs = case.make_batch(batch, torch.Generator().manual_seed(seed))

    def step(*batch_tensors: torch.Tensor) -> torch.Tensor:
        loss = case.loss(case.model, *batch_tensors)
        loss.backward()
        return loss.detach()

    rows = []
    with progress_bar() as bar:
        task = bar.add_task(f"{policy} steps", total=steps)
        for i in range(steps):
            loss = runner.step(step, *inputs)
            opt.step()
            opt.zero_grad(set_to_none=True)
            assert runner.last is not None
            rows.append({"step": i, "loss": float(loss), "held_peak_MiB": runner.last.meter.peak / 2**20,
                         "seconds": runner.last.seconds, "profiled": i == 0})  # fmt: skip
            bar.advance(task)
    console.print(render_table(f"{model}, batch {batch}, policy {policy}", rows))
    write_out(
        out, {"model": model, "batch": batch, "policy": policy, "budget": limit, "steps": rows}, rows=rows
    )
    if plot is not None:
        trace = runner.last.meter.trace or []
        timeline = [row for _, row in trace]
        _plot_memory(plot, timeline, runner.static_bytes, limit, f"{model} b{batch}: {policy}, measured")


@app.command()
def maxbatch(model: ModelOpt = "resnet50", budget: Annotated[str, typer.Option("--budget", help="Memory budget.")] = "4GiB",
             batches: Annotated[str, typer.Option("--batches", help="Batch sizes to try, ascending.")] = "4,8,16,32,64",
             methods: Annotated[str, typer.Option("--methods", help="delta policies and torch-checkpoint, "
                                                  "torch-save-on-cpu, torch-sac.")] = "none,checkpoint,offload,dtr,capuchin,delta",
             rounds: Annotated[int, typer.Option("--rounds", help="Interleaved timed rounds at the common batch.")] = 3,
             image_size: ImageOpt = None, data: DataOpt = None, seq_len: SeqLenOpt = None, device: DeviceOpt = "auto",
             out: OutOpt = None) -> None:  # fmt: skip
    """Every method's largest batch under --budget, its held peak and time per sample, side by side."""
    from delta.bench import TORCH_METHODS, run_maxbatch
    from delta.models import DATA
    from effcore.device import device_spec

    _positive(rounds=rounds)
    limit = parse_bytes(budget, flag="--budget")
    sizes = int_list(batches, "--batches")
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in POLICIES and m not in TORCH_METHODS]
    if unknown or not names:
        raise ConfigError(f"--methods: unknown {unknown or methods!r}",
                          hint=f"choose from {', '.join((*POLICIES, *TORCH_METHODS))}")  # fmt: skip
    dev = infer_device(device)
    case = _case(model, data, image_size, seq_len, dev)
    with progress_bar() as bar:
        task = bar.add_task("maxbatch", total=None)
        rows = run_maxbatch(case, limit, sizes, methods=names, rounds=rounds, device=dev,
                            bandwidth=device_spec(dev).host_link_bandwidth,
                            progress=lambda msg: bar.update(task, description=msg))  # fmt: skip
    table = [r.to_dict() for r in rows]
    base = next((r for r in rows if r.method == "none" and r.max_batch), None)
    for row in table:
        if base is not None and row["max_batch"] and row["seconds_per_sample"]:
            row["batch_x"] = row["max_batch"] / base.max_batch
            row["time_x"] = row["seconds_per_sample"] / base.seconds_per_sample
        if base is not None and base.common_seconds_per_sample and row["common_seconds_per_sample"]:
            row["overhead_x"] = row["common_seconds_per_sample"] / base.common_seconds_per_sample
            row["cpu_overhead_x"] = row["common_cpu_seconds_per_sample"] / base.common_cpu_seconds_per_sample
    console.print(render_table(f"{model} under {budget}", table))
    meta = {"model": model, "budget": limit, "batches": sizes, "image_size": image_size, "data": data or DATA[model][0],
            "seq_len": seq_len, "device": str(dev),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "rounds": rounds}  # fmt: skip
    write_out(out, {**meta, "rows": table}, rows=table)


@app.command()
def evoformer(lengths: Annotated[str, typer.Option("--lengths", help="Residue counts N.")] = "16,32",
              forms: Annotated[str | None, typer.Option("--forms", help="plain, chunked, checkpoint, bf16, delta "
                                                        "(with --limit: plain, chunked, checkpoint, checkpoint+chunked, "
                                                        "bf16). Default: all.")] = None,
              chunk: Annotated[int, typer.Option("--chunk", help="Rows per chunk (chunked form).")] = 4,
              delta_fraction: Annotated[float, typer.Option("--delta-fraction", help="delta form budget: parameters "
                                                            "+ gradients + this share of the plain saved bytes.")] = 0.5,
              limit: Annotated[str | None, typer.Option("--limit", help="Process memory limit (e.g. 16GiB): grow N "
                                                        "over --lengths until each form's peak RSS (a fresh process "
                                                        "per run) passes it.")] = None,
              out: OutOpt = None) -> None:  # fmt: skip
    """Evoformer stack (CPU): peak memory and step time against sequence length, per technique."""
    from delta.limits import LIMIT_FORMS, evoformer_limits, longest
    from delta.sweep import FORMS, evoformer_sweep
    from effcore.device import device_spec

    _positive(chunk=chunk)
    sizes = int_list(lengths, "--lengths")
    cap = parse_bytes(limit, flag="--limit") if limit is not None else None
    names = [f.strip() for f in (forms or ",".join(LIMIT_FORMS if cap else FORMS)).split(",") if f.strip()]
    with progress_bar() as bar:
        task = bar.add_task("evoformer", total=None)
        if cap is not None:
            rows = evoformer_limits(sizes, names, limit=cap, chunk=chunk,
                                    progress=lambda msg: bar.update(task, description=msg))  # fmt: skip
        else:
            rows = evoformer_sweep(sizes, names, chunk=chunk, delta_fraction=delta_fraction,
                                   bandwidth=device_spec("cpu").host_link_bandwidth,
                                   progress=lambda msg: bar.update(task, description=msg))  # fmt: skip
    table = [r.to_dict() for r in rows]
    title = (
        f"Evoformer: longest N within {limit}" if cap else "Evoformer: one training step per form and length"
    )
    console.print(render_table(title, table))
    extra = {"limit": cap, "longest": longest(rows, cap)} if cap else {"delta_fraction": delta_fraction}
    write_out(out, {"lengths": sizes, "forms": names, "chunk": chunk, **extra,
                    "threads": 1 if cap else torch.get_num_threads(), "torch": torch.__version__, "rows": table},
              rows=table)  # fmt: skip
