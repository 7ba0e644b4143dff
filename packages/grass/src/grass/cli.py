"""The ``grass`` command line: train any method, evaluate, plot layer importance, benchmark the offload."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    DeviceOpt,
    JsonOutOpt,
    OutOpt,
    PlotOpt,
    SeedOpt,
    console,
    make_app,
    progress_bar,
    render_table,
    write_out,
)
from effcore.errors import ConfigError
from grass.config import METHODS
from grass.models import MODEL_HELP

app = make_app(
    "grass",
    "GRASS: gradient-based adaptive layer-wise importance sampling for memory-efficient fine-tuning.\n\n"
    "  grass train --method grass --steps 30 --out run.json   # SmolLM2 on GSM8K, 2 layers at a time\n\n"
    "  grass train --method lisa --run-dir runs/lisa           # resumable: rerun to continue\n\n"
    "  grass eval --run-dir runs/lisa --generate 64            # held-out loss and exact match\n\n"
    "  grass importance run.json --plot mgn.png               # MGN and probabilities per layer\n\n"
    "  grass bench --pairs 5                                   # what the optimizer-state offload costs\n\n"
    f"Methods: {', '.join(METHODS)}. Every setting can also come from --config FILE.toml.",
)

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP, show_default=False)]
TaskOpt = Annotated[
    str | None, typer.Option("--task", help="gsm8k (default) or shakespeare.", show_default=False)
]
EvalLimitOpt = Annotated[int, typer.Option("--eval-limit", help="Held-out examples scored for loss.")]
GenerateOpt = Annotated[
    int, typer.Option("--generate", help="GSM8K problems answered by greedy decoding (exact match).")
]


def _opt(help: str, flag: str | None = None):
    return typer.Option(*([flag] if flag else []), help=help, show_default=False)


@app.command()
def train(
    method: Annotated[str | None, _opt(f"{' | '.join(METHODS)} (default grass).", "--method")] = None,
    model: ModelOpt = None,
    task: TaskOpt = None,
    steps: Annotated[int | None, _opt("Optimizer steps (default 100).", "--steps")] = None,
    batch: Annotated[int | None, _opt("Sequences per step (default 4).", "--batch")] = None,
    grad_accum: Annotated[int | None, _opt("Micro-batches per step (default 1).", "--grad-accum")] = None,
    seq_len: Annotated[int | None, _opt("Tokens per sequence (default 192).", "--seq-len")] = None,
    lr: Annotated[
        float | None, _opt("Peak learning rate (default 2e-5; 2e-4 for LoRA/DoRA).", "--lr")
    ] = None,
    gamma: Annotated[int | None, _opt("Active layers (default 2).", "--gamma")] = None,
    probe_steps: Annotated[
        int | None, _opt("GRASS T_p: probing steps (default 10).", "--probe-steps")
    ] = None,
    sample_period: Annotated[
        int | None,
        _opt("T_s: steps between resamples (LISA's and BAdam's period too; default 25).", "--sample-period"),
    ] = None,
    update_period: Annotated[
        int | None, _opt("GRASS T_u: steps between MGN refreshes (default 25).", "--update-period")
    ] = None,
    tau: Annotated[float | None, _opt("GRASS softmax temperature (default 0.5).", "--tau")] = None,
    alpha: Annotated[
        float | None, _opt("GRASS EMA weight of the new window (default 0.5).", "--alpha")
    ] = None,
    normalize: Annotated[
        bool | None,
        _opt(
            "GRASS: divide the MGN by its mean before softmax(m/tau) (default on).",
            "--normalize/--no-normalize",
        ),
    ] = None,
    embed_head: Annotated[
        str | None,
        _opt(
            "train | freeze the embeddings, LM head and final norm (default: the method's).", "--embed-head"
        ),
    ] = None,
    on_switch: Annotated[
        str | None,
        _opt("resume | reset a returning layer's Adam moments (default: the method's).", "--on-switch"),
    ] = None,
    offload: Annotated[
        str | None,
        _opt("none | inactive | layerwise optimizer-state offload (default: the method's).", "--offload"),
    ] = None,
    bf16: Annotated[bool | None, _opt("bf16 autocast.", "--bf16/--no-bf16")] = None,
    gradient_checkpointing: Annotated[
        bool | None,
        _opt("Recompute activations in backward.", "--gradient-checkpointing/--no-gradient-checkpointing"),
    ] = None,
    config: Annotated[
        Path | None, _opt("TOML file with any of these settings (flags win).", "--config")
    ] = None,
    run_dir: Annotated[
        Path | None,
        _opt("Keep checkpoints here; a run found here is resumed (same settings only).", "--run-dir"),
    ] = None,
    save_every: Annotated[
        int | None,
        _opt("With --run-dir: also checkpoint every N steps (default: only at the end).", "--save-every"),
    ] = None,
    nproc: Annotated[
        int, typer.Option("--nproc", help="Data-parallel ranks (torchrun, DDP; gloo on CPU).")
    ] = 1,
    eval_limit: EvalLimitOpt = 64,
    generate: GenerateOpt = 0,
    seed: Annotated[int | None, _opt("Random seed (data order, sampling; default 0).", "--seed")] = None,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Fine-tune with one method; print the loss per step, memory by category, throughput and the
    held-out evaluation."""
    from effcore.device import infer_device
    from grass.config import load_config

    cfg = load_config(
        config, method=method, model=model, task=task, steps=steps, batch=batch, grad_accum=grad_accum,
        seq_len=seq_len, lr=lr, gamma=gamma, probe_steps=probe_steps, sample_period=sample_period,
        update_period=update_period, tau=tau, alpha=alpha, normalize=normalize, embed_head=embed_head,
        on_switch=on_switch, offload=offload, bf16=bf16, gradient_checkpointing=gradient_checkpointing,
        save_every=save_every, seed=seed,
    )  # fmt: skip
    if nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {nproc}")
    if cfg.save_every and run_dir is None:
        raise ConfigError("--save-every needs --run-dir (where the checkpoints go)", hint="add --run-dir DIR")
    _check_eval(cfg.task, eval_limit, generate)
    dev = infer_device(device)
    if nproc > 1:
        data = _train_ranks(cfg, nproc, device, run_dir, eval_limit, generate)
    else:
        from grass.train import run

        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def report(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(f"{cfg.method}: {stage}", total=total)
                bar.update(tasks[stage], completed=done)

            data = run(cfg, device=dev, run_dir=run_dir, resume=run_dir is not None, eval_limit=eval_limit,
                       generate=generate, progress=report).to_dict()  # fmt: skip
    _show(data)
    from effcore.provenance import command_line

    write_out(out, {**data, "command": command_line()}, rows=data["rows"])


def _check_eval(task: str, eval_limit: int, generate: int) -> None:
    """The held-out evaluation's sizes: something to score, and exact match only where it exists."""
    if eval_limit < 1:
        raise ConfigError(
            f"--eval-limit must be at least 1, got {eval_limit}", hint="score at least one example"
        )
    if generate < 0:
        raise ConfigError(f"--generate must be >= 0, got {generate}")
    if generate and task != "gsm8k":
        raise ConfigError(
            f"--generate {generate}: {task} has no answers to match (exact match is a GSM8K metric)",
            hint="drop --generate",
        )


def _train_ranks(cfg, nproc: int, device: str, run_dir, eval_limit: int, generate: int) -> dict:
    from effcore.distributed import run_job

    result: dict = {}
    job = {"config": cfg.to_dict(), "device": "cpu" if device == "cpu" else "auto", "resume": run_dir is not None,
           "run_dir": str(run_dir) if run_dir else None, "eval_limit": eval_limit, "generate": generate}  # fmt: skip
    with progress_bar() as bar:
        task = bar.add_task(f"{cfg.method} on {nproc} ranks", total=cfg.steps)

        def on_event(event: dict) -> None:
            if event.get("event") == "step":
                bar.update(task, completed=event["done"])
            elif event.get("event") == "done":
                result.update(event["result"])

        run_job("grass.worker", "train", job, nproc=nproc, on_event=on_event)
    return result


def _show(data: dict) -> None:
    cfg, s = data["config"], data["summary"]
    rows = data["rows"]
    shown = rows if len(rows) <= 20 else rows[:: max(1, len(rows) // 20)] + rows[-1:]
    console.print(render_table(f"{cfg['method']} on {cfg['model']} / {cfg['task']}", shown))
    mib = 2**20
    mem = s.get("memory") or {}
    summary = [
        {"metric": "held-out answer loss", "value": s["eval"]["loss"]},
        {"metric": "exact match", "value": "not measured" if s["eval"]["accuracy"] is None else s["eval"]["accuracy"]},
        {"metric": "tokens/s", "value": s["tokens_per_s"]},
        {"metric": "offload share of step time", "value": s["offload_share"]},
        {"metric": "parameters updated at a time", "value": s["trainable_params"]},
        *({"metric": f"{k} MiB (one step)", "value": v / mib} for k, v in mem.items()),
        {"metric": "optimizer state on device, peak MiB", "value": (s["optimizer_state_device_peak"] or 0) / mib},
        {"metric": "optimizer state on host MiB", "value": s["optimizer_state_host"] / mib},
    ]  # fmt: skip
    console.print(render_table("summary", summary))


@app.command("eval")
def eval_(
    model: ModelOpt = None,
    run_dir: Annotated[
        Path | None, _opt("Evaluate this run's checkpoint (default: the base model).", "--run-dir")
    ] = None,
    task: TaskOpt = None,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per scored example.")] = 192,
    eval_limit: EvalLimitOpt = 64,
    generate: Annotated[
        int | None,
        _opt("GSM8K problems answered by greedy decoding (exact match; default 32).", "--generate"),
    ] = None,
    device: DeviceOpt = "auto",
    out: JsonOutOpt = None,
) -> None:
    """Held-out answer loss and GSM8K exact match of the base model or of a run's checkpoint."""
    from effcore.device import infer_device
    from grass.config import RunConfig
    from grass.data import TASKS, load_task
    from grass.evaluate import evaluate
    from grass.models import MODELS, load_model, prepare

    record = None
    if run_dir is not None:
        from grass.checkpoint import CHECKPOINT, read_checkpoint

        record = read_checkpoint(run_dir / CHECKPOINT, model=model)
        task = task or record["config"]["task"]
    elif model is not None and model not in MODELS and not model.startswith("tiny:"):
        raise ConfigError(f"unknown model {model!r}", hint=MODEL_HELP)
    task = task or "gsm8k"
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", hint=f"choose from {', '.join(TASKS)}")
    if seq_len < 8:
        raise ConfigError(f"--seq-len must be >= 8, got {seq_len}")
    if generate is None:
        generate = 32 if task == "gsm8k" else 0
    _check_eval(task, eval_limit, generate)
    dev = infer_device(device)
    if record is not None:
        cfg = RunConfig(**record["config"])
        net, tok = load_model(cfg.model, device=dev, seed=cfg.seed)
        prep = prepare(cfg, net)
        prep.model.load_state_dict(record["model_state"])
        net, name = prep.model, f"{cfg.method} step {record['step']}"
    else:
        net, tok = load_model(model or "smollm2", device=dev)
        name = f"{model or 'smollm2'} (base)"
    import time

    from effcore.provenance import run_meta

    t0 = time.perf_counter()
    examples = load_task(task, "test", tok, seq_len=seq_len, limit=eval_limit)
    with progress_bar() as bar:
        t = bar.add_task("exact match", total=min(generate, len(examples)))
        result = evaluate(
            net, tok, examples, generate=generate, progress=lambda d, _n: bar.update(t, completed=d)
        )
    console.print(render_table(f"{name} on {task} test", [result.to_dict()]))
    meta = {**run_meta(started=t0, device=dev), "seq_len": seq_len, "generate": generate}
    write_out(out, {"model": name, "task": task, **result.to_dict(), **meta})


@app.command()
def importance(
    result: Annotated[Path, typer.Argument(help="A `grass train --out X.json` file of a grass run.")],
    plot: PlotOpt = None,
    out: OutOpt = None,
) -> None:
    """Each layer's MGN and sampling probability at every refresh of a GRASS run (table and plot)."""
    from grass.plots import plot_importance

    try:
        data = json.loads(result.read_text())
        history, cfg = data["importance"], data["config"]
    except OSError as err:
        raise ConfigError(f"cannot read {result}: {err.strerror or err}") from None
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{result} is not a grass train result", hint="write one with grass train --out X.json"
        ) from None
    if not history:
        raise ConfigError(
            f"{result} has no importance history ({cfg.get('method')} run)", hint="use a grass run"
        )
    last = history[-1]
    rows = [
        {"layer": i, "mgn": m, "probability": p}
        for i, (m, p) in enumerate(zip(last["mgn"], last["probabilities"], strict=True))
    ]
    console.print(render_table(f"{cfg['method']}: layer importance at step {last['step']}", rows))
    if plot is not None:
        plot_importance(history, plot, title=f"{cfg['method']} on {cfg['model']} / {cfg['task']}")
        console.print(f"wrote {plot}")
    write_out(out, {"config": cfg, "importance": history}, rows=rows)


@app.command()
def bench(
    model: ModelOpt = None,
    gamma: Annotated[int, typer.Option("--gamma", help="Active layers.")] = 2,
    batch: Annotated[int, typer.Option("--batch", help="Sequences per step.")] = 2,
    seq_len: Annotated[int, typer.Option("--seq-len", help="Tokens per sequence.")] = 128,
    pairs: Annotated[int, typer.Option("--pairs", help="Alternating offloaded/resident step pairs.")] = 5,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    out: OutOpt = None,
) -> None:
    """Step time with the optimizer state streamed from the host against kept on the device."""
    import torch

    from effcore.device import infer_device
    from grass.bench import bench_offload

    if pairs < 1:
        raise ConfigError(f"--pairs must be at least 1, got {pairs}")
    torch.manual_seed(seed)
    dev = infer_device(device)
    with progress_bar() as bar:
        t = bar.add_task("step pairs", total=pairs)
        r = bench_offload(model=model or "smollm2", gamma=gamma, batch=batch, seq_len=seq_len, pairs=pairs,
                          device=dev, progress=lambda d, _n: bar.update(t, completed=d))  # fmt: skip
    row = {"device": r.device, "offload step s": r.offload_step_s, "resident step s": r.resident_step_s,
           "ratio median": r.ratio_median, "ratio min": r.ratio_min, "ratio max": r.ratio_max,
           "transfer share": r.transfer_share, "pairs": r.pairs}  # fmt: skip
    console.print(render_table("optimizer-state offload: layerwise vs resident", [row]))
    write_out(out, row, rows=[row])
