"""One fine-tuning run of any method in the same harness: same data order, step budget and schedule.

``run(cfg)`` trains, checkpoints (atomically; ``resume=True`` continues a run bit for bit), stops
on a non-finite loss with the step named and the last good checkpoint kept, measures one step's
memory by category (``effcore.profiling.track_memory``), and evaluates on the held-out split.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from effcore.device import infer_device
from effcore.errors import ConfigError, EffmlError
from effcore.provenance import machine_info
from grass.checkpoint import load_checkpoint, save_checkpoint
from grass.config import RunConfig
from grass.data import Batches, load_task
from grass.evaluate import evaluate
from grass.models import Prepared, load_model, prepare

__all__ = ["RunResult", "TrainingError", "lr_lambda", "run"]

Progress = Callable[[str, int, int], None]


class TrainingError(EffmlError):
    """Training cannot go on (a non-finite loss); the last good checkpoint is kept."""


def lr_lambda(cfg: RunConfig) -> Callable[[int], float]:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine or linear decay to 0 at ``cfg.steps``
    (or constant): the same multiplier for every method."""

    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / (cfg.warmup + 1)
        if cfg.schedule == "constant":
            return 1.0
        done = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return (
            0.5 * (1 + math.cos(math.pi * min(done, 1.0))) if cfg.schedule == "cosine" else max(0.0, 1 - done)
        )

    return f


@dataclass(slots=True)
class RunResult:
    """Per-step rows, the summary (throughput, memory, evaluation) and the GRASS importance history."""

    config: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    importance: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "summary": self.summary,
            "rows": self.rows,
            "importance": self.importance,
        }


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Loop:
    """The state of one run between steps. Under an initialised process group of more than one
    rank, the model runs in DDP and each rank trains on its slice of every batch."""

    def __init__(self, cfg: RunConfig, prep: Prepared, batches: Batches, device: torch.device) -> None:
        self.cfg, self.prep, self.batches, self.device = cfg, prep, batches, device
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(prep.optimizer, lr_lambda(cfg))
        self.rank, self.world = _world()
        self.forward = prep.model
        if self.world > 1:
            if cfg.batch % self.world:
                raise ConfigError(
                    f"--batch {cfg.batch} does not split over {self.world} ranks", hint="use a multiple"
                )
            # frozen layers take no part in a step: DDP must not wait for their gradients
            self.forward = nn.parallel.DistributedDataParallel(
                prep.model, find_unused_parameters=prep.tuner is not None
            )
            if prep.tuner:
                prep.tuner.meter.ddp_comm_hook(self.forward)

    def _batch(self, index: int) -> dict[str, torch.Tensor]:
        batch = self.batches.batch_at(index)
        if self.world > 1:
            per = self.cfg.batch // self.world
            batch = {n: t[self.rank * per : (self.rank + 1) * per] for n, t in batch.items()}
        return {n: t.to(self.device) for n, t in batch.items()}

    def step(self, step: int) -> dict[str, Any]:
        cfg, prep = self.cfg, self.prep
        active = prep.tuner.begin_step(step) if prep.tuner else None
        t0 = time.perf_counter()
        total, tokens = 0.0, 0
        for k in range(cfg.grad_accum):
            batch = {
                n: t.to(self.device) for n, t in self.batches.batch_at(step * cfg.grad_accum + k).items()
            }
            if prep.tuner:
                prep.tuner.meter.armed = k == cfg.grad_accum - 1  # .grad holds the step's gradient
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                loss = self.forward(**batch).loss / cfg.grad_accum
            if cfg.nan_at_step == step:
                loss = loss * float("nan")
            seen = loss.detach().float().clone()
            if self.world > 1:  # every rank stops together (a lone rank would hang the others)
                dist.all_reduce(seen)
            if not torch.isfinite(seen):
                raise TrainingError(
                    f"the loss is {float(seen)} at step {step + 1}: stopped before updating"
                    + (" (summed over the ranks)" if self.world > 1 else "")
                )
            loss.backward()
            total += float(loss.detach())
            tokens += int(batch["attention_mask"].sum())
        if prep.tuner:
            prep.tuner.end_backward(step)
            prep.tuner.step()
        else:
            prep.optimizer.step()
        with warnings.catch_warnings():
            # while GRASS probes, optimizer.step() updates nothing and torch warns about the order
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step()`")
            self.scheduler.step()
        prep.optimizer.zero_grad(set_to_none=True)
        if self.world > 1:  # the step's mean loss and all ranks' tokens
            both = torch.tensor([total, float(tokens)], dtype=torch.float64)
            dist.all_reduce(both)
            total, tokens = float(both[0]) / self.world, int(both[1])
        row = {"step": step + 1, "loss": total, "seconds": time.perf_counter() - t0, "tokens": tokens}
        if prep.tuner:
            row["active"] = "probe" if active is None else ",".join(map(str, active))
        return row

    def payload(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        p = self.prep
        return {
            "config": self.cfg.to_dict(),
            "model_state": {k: v.detach().cpu() for k, v in p.model.state_dict().items()},
            "optimizer": p.tuner.state_dict() if p.tuner else p.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rows": rows,
        }

    def restore(self, record: dict[str, Any]) -> list[dict[str, Any]]:
        p = self.prep
        p.model.load_state_dict(record["model_state"])
        if p.tuner:
            p.tuner.load_state_dict(record["optimizer"])
        else:
            p.optimizer.load_state_dict(record["optimizer"])
        self.scheduler.load_state_dict(record["scheduler"])
        return list(record["rows"])


def _memory(loop: _Loop, step: int) -> tuple[dict[str, Any], dict[str, Any]]:
    from effcore.profiling import track_memory

    rows: list[dict[str, Any]] = []
    breakdown = track_memory(loop.prep.model, loop.prep.optimizer, lambda: rows.append(loop.step(step)))
    return breakdown.to_dict(), rows[0]


def run(
    cfg: RunConfig,
    *,
    device: str | torch.device = "auto",
    run_dir: Path | None = None,
    resume: bool = False,
    eval_limit: int = 64,
    generate: int = 0,
    measure_memory: bool = True,
    eval_before: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train ``cfg`` and evaluate it; see the module docstring. ``eval_before`` also evaluates the
    model before the first step (``summary["eval_before"]``, same examples, no generation)."""
    from effcore.memory import memory_stats

    start_wall = time.perf_counter()
    dev = infer_device(device)
    torch.manual_seed(cfg.seed)
    model, tok = load_model(cfg.model, device=dev, seed=cfg.seed)
    train_ex = load_task(cfg.task, "train", tok, seq_len=cfg.seq_len, limit=cfg.train_limit)
    prep = prepare(cfg, model)
    loop = _Loop(cfg, prep, Batches(train_ex, cfg.batch, seed=cfg.seed, pad_id=tok.pad_token_id), dev)
    rows: list[dict[str, Any]] = []
    test_ex = load_task(cfg.task, "test", tok, seq_len=cfg.seq_len, limit=eval_limit)
    before = evaluate(model, tok, test_ex).to_dict() if eval_before else None
    if run_dir is not None and resume:
        record = load_checkpoint(run_dir, fingerprint=cfg.fingerprint(), model=cfg.model)
        if record is not None:
            rows = loop.restore(record)
    measure_at = cfg.steps - 1 if measure_memory and cfg.grad_accum == 1 and loop.world == 1 else None
    memory: dict[str, Any] | None = None
    last_saved = len(rows)
    for step in range(len(rows), cfg.steps):
        try:
            if step == measure_at:
                memory, row = _memory(loop, step)
                row["measured"] = True
            else:
                row = loop.step(step)
        except TrainingError as err:
            where = (
                f"the last good checkpoint (step {last_saved}) is kept in {run_dir}"
                if run_dir and last_saved
                else "no checkpoint was written"
            )
            raise TrainingError(err.message, hint=f"{where}; lower --lr or turn off --bf16") from None
        rows.append(row)
        if progress:
            progress("train", step + 1, cfg.steps)
        if run_dir is not None and (
            (cfg.save_every and (step + 1) % cfg.save_every == 0) or step + 1 == cfg.steps
        ):
            if loop.rank == 0:  # the ranks hold the same weights and state: one file, one writer
                save_checkpoint(
                    run_dir, loop.payload(rows), fingerprint=cfg.fingerprint(), model=cfg.model, step=step + 1
                )
            last_saved = step + 1
    train_wall = time.perf_counter() - start_wall
    ev = evaluate(
        prep.model,
        tok,
        test_ex,
        generate=generate,
        progress=(lambda d, t: progress("eval", d, t)) if progress else None,
    )
    timed = [r for r in rows if not r.get("measured")]
    seconds = sum(r["seconds"] for r in timed)
    stats = prep.tuner.optimizer.stats if prep.tuner else None
    summary = {
        "final_loss": statistics.fmean(r["loss"] for r in rows[-5:]),
        "eval": ev.to_dict(),
        **({"eval_before": before} if before is not None else {}),
        "tokens_per_s": sum(r["tokens"] for r in timed) / seconds if seconds else None,
        "median_step_s": statistics.median(r["seconds"] for r in timed) if timed else None,
        "offload_s": stats.transfer_s if stats else 0.0,
        "optimizer_state_device_peak": stats.peak_device_bytes if stats else _state_bytes(prep.optimizer),
        "optimizer_state_host": prep.tuner.optimizer.offloader.host_bytes if prep.tuner else 0,
        "offload_share": (stats.transfer_s / seconds) if stats and seconds else 0.0,
        "switches": prep.tuner.switches if prep.tuner else 0,
        "trainable_params": _trainable(prep),
        "memory": memory,
        "peak_rss": memory_stats("cpu").peak_allocated,
        "wall_s": time.perf_counter() - start_wall,
        "train_wall_s": train_wall,
        "machine": machine_info(dev),
    }  # fmt: skip
    history = getattr(prep.tuner.sampler, "history", []) if prep.tuner else []
    return RunResult(config=cfg.to_dict(), rows=rows, summary=summary, importance=list(history))


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of a torch optimizer's state tensors, each storage once (what it holds between steps)."""
    from effcore.memory import TensorTracker

    tracker = TensorTracker()
    tracker.track("optimizer_state", optimizer)
    return tracker.total()


def _trainable(prep: Prepared) -> int:
    """Parameters updated at a time: LoRA/DoRA adapters, all for full, gamma layers (+E/H) otherwise."""
    if prep.tuner is None:
        return sum(p.numel() for p in prep.model.parameters() if p.requires_grad)
    tuner = prep.tuner
    sizes = tuner.lmap.layer_numel()
    gamma = len(tuner.active or ()) or tuner.lmap.num_layers
    extra = sum(p.numel() for _, p in tuner.lmap.embed_head) if tuner.embed_head == "train" else 0
    return int(statistics.fmean(sizes) * gamma) + extra
