"""``merak bench``: pipeline schedules side by side in one gloo job, measured and simulated.

Every case (a schedule and a recompute setting) trains the same model on the same real text from
the same weights, on the same ranks, one after another: a few warm-up steps, then timed steps. Per
case and stage it records the step's wall time, the stage's busy time (its forward, recompute and
backward instructions), its peak memory (parameters and gradients, plus the most bytes autograd held
for backward at once: :func:`effcore.memory.saved_tensor_peak`), and the first step's loss, which must
agree across cases.
Each case is also simulated from its own measured forward and backward times
(:func:`merak.simulate.costs_from_traces`), which shows the schedule's effect without the noise of
ranks that share CPU cores; the simulated step is compared with the measured one.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from effcore.errors import ConfigError

__all__ = ["BENCH_CASES", "BenchJob", "bench_worker"]

# name -> (schedule, recompute): torch's own schedules, ours, and the paper's recompute comparison
BENCH_CASES: dict[str, tuple[str, Any]] = {
    "torch-gpipe": ("torch-gpipe", None),
    "torch-1f1b": ("torch-1f1b", None),
    "gpipe": ("gpipe", None),
    "1f1b": ("1f1b", None),
    "1f1b, recompute all": ("1f1b", "all"),
    "1f1b, stage-aware r0=1": ("1f1b", 1.0),
    "shifted-critical-path, r0=1": ("shifted-critical-path", 1.0),
    "pre-recompute, r0=1": ("pre-recompute", 1.0),
}


@dataclass(kw_only=True)
class BenchJob:
    model: str = "smollm2"
    stages: int = 4
    batch: int = 1
    seq_len: int = 256
    microbatches: int = 8
    warmup: int = 1
    steps: int = 3
    data: str = "wikitext2"
    data_dir: str | None = None
    cases: list[str] = field(default_factory=lambda: list(BENCH_CASES))
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("stages", "batch", "seq_len", "microbatches", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        unknown = [c for c in self.cases if c not in BENCH_CASES]
        if unknown or not self.cases:
            raise ConfigError(
                f"unknown bench case(s) {unknown}", hint=f"choose from: {'; '.join(BENCH_CASES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _case(pm, blocks: torch.Tensor, job: BenchJob) -> dict[str, Any]:
    from effcore.memory import saved_tensor_peak

    steps, traces, peaks, loss0 = [], [], [], None
    for i in range(job.warmup + job.steps):
        batch = blocks[
            (i * job.microbatches * job.batch) % (len(blocks) - job.microbatches * job.batch + 1) :
        ][: job.microbatches * job.batch]
        with saved_tensor_peak() as meter:
            dist.barrier()
            t0 = time.perf_counter()
            loss = pm.train_step(batch, batch)
            dist.barrier()
            seconds = time.perf_counter() - t0
        for p in pm.parameters():
            p.grad = None
        if i == 0 and loss is not None:
            loss0 = loss.item()
        if i >= job.warmup:
            steps.append(seconds)
            traces.append([e.to_dict() for e in pm.trace])
            peaks.append(meter.peak)
    weights = sum(p.numel() * p.element_size() for p in pm.parameters())
    # parameters and their gradients, plus the most activations held at once
    return {"steps_s": steps, "traces": traces, "peak_bytes": 2 * weights + max(peaks),
            "activation_peak_bytes": max(peaks), "loss0": loss0}  # fmt: skip


def bench_worker(job_dict: dict[str, Any], group: Any) -> None:
    """Run every case on this rank (``python -m merak.worker bench JOB.json``); the last stage reports."""
    from effcore.lm import token_blocks
    from merak.capture import capture
    from merak.models import load_model
    from merak.parallel import parallelize
    from merak.train import TrainJob, _rank_device, corpus_ids

    job = BenchJob(**job_dict)
    if dist.get_world_size() != job.stages:
        raise ConfigError(
            f"the bench runs one rank per stage: {job.stages} stages, {dist.get_world_size()} ranks"
        )
    device = _rank_device(job.device)
    model = load_model(job.model, device=device)
    captured = capture(model, (job.batch, job.seq_len))  # one capture serves every case (pp only)
    text = TrainJob(model=job.model, mesh=(1, 1, job.stages), data=job.data, data_dir=job.data_dir)
    blocks = token_blocks(corpus_ids(text, model.config.vocab_size), block_size=job.seq_len)
    results = {}
    for name in job.cases:
        schedule, recompute = BENCH_CASES[name]
        ratio = [1.0] * job.stages if recompute == "all" else recompute
        pm = parallelize(model, (1, 1, job.stages), microbatch=(job.batch, job.seq_len),
                         microbatches=job.microbatches, schedule=schedule, recompute_ratio=ratio,
                         captured=captured, device=device)  # fmt: skip
        results[name] = _case(pm, blocks.to(device), job)
        results[name]["plan"] = [st.to_dict() for st in pm.plan.stages]
    gathered: list[Any] = [None] * job.stages
    dist.all_gather_object(gathered, {"stage": pm.stage_index, "results": results})
    if pm.is_last:
        print(json.dumps({"event": "done", "stages": sorted(gathered, key=lambda g: g["stage"])}), flush=True)


def summarize(stages: list[dict[str, Any]], job: BenchJob) -> list[dict[str, Any]]:
    """One row per case: median step and spread, ratio to torch's 1F1B, measured and simulated bubble,
    simulated step from the measured stage times and its error, peak memory per stage."""
    from merak.pipeline import TraceEvent
    from merak.simulate import StageCost, costs_from_traces, simulate

    rows = []
    base = None
    for name in job.cases:
        schedule, _ = BENCH_CASES[name]
        kind = schedule.removeprefix("torch-")
        per_stage = [st["results"][name] for st in stages]
        steps = [max(r["steps_s"][i] for r in per_stage) for i in range(job.steps)]
        median = statistics.median(steps)
        if name == "torch-1f1b":
            base = median
        busy = [
            statistics.median(sum(e["end"] - e["start"] for e in t) for t in r["traces"]) for r in per_stage
        ]
        traces = [[TraceEvent(**e) for e in r["traces"][-1]] for r in per_stage]
        plans = per_stage[0]["plan"]
        costs = [
            StageCost(forward_s=1.0, backward_s=2.0, recompute_ratio=p["recompute_ratio"]) for p in plans
        ]
        sim = simulate(costs_from_traces(traces, costs, kind, job.microbatches), kind, job.microbatches)
        rows.append(
            {
                "case": name,
                "step s": median,
                "spread s": max(steps) - min(steps),
                "bubble": 1 - sum(busy) / (len(busy) * median),
                "sim step s": sim.step_s,
                "sim bubble": sim.bubble_overall,
                "sim error": sim.step_s / steps[-1] - 1,
                "peak MiB": [r["peak_bytes"] / 2**20 for r in per_stage],
                "loss0": next(r["loss0"] for r in per_stage if r["loss0"] is not None),
            }
        )
    for row in rows:
        row["vs torch-1f1b"] = row["step s"] / base if base else None
    return rows
