"""The training loop: a byte-level LM whose block stack switches strategy per layer and per batch.

Runs on every rank of a process group (``paradyse train`` starts it under torchrun). Per step:
sample a sequence length from the stream, plan (``adaptive``: our :class:`Planner`; ``paradyse``:
the paper's heuristic; or one static strategy), run forward and backward with that plan, step AdamW,
and log the plan, predicted and measured time, and (with ``measure_memory``) the measured peak.

A plan is only run if it fits the memory cap by the analytic model; a static strategy that does not
fit is logged as an OOM step and skipped. With ``measure_memory`` every step's real peak is read
(:class:`paradyse.placement.PeakMemory`: the CUDA allocator on a GPU, ``MemTracker`` on the CPU)
and compared with the cap afterwards, on every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from effcore.errors import ConfigError
from paradyse.comm import all_reduce_grads, rank_and_size
from paradyse.config import STRATEGIES, ModelConfig, PlanError
from paradyse.costmodel import Profile, hardware_id
from paradyse.data import LengthSampler, TextStream, load_corpus
from paradyse.memory_model import lm_bytes
from paradyse.model import ParallelTransformer, rms_norm
from paradyse.placement import PeakMemory, Placement
from paradyse.planner import CostTable, HeuristicState, Plan, Planner, compress, paradyse_plan

__all__ = ["FAULTS", "MODES", "ParadyseLM", "TrainArgs", "train_step", "train_worker"]

MODES = ("adaptive", "paradyse", *STRATEGIES)
FAULTS = ("exit", "error", "hang")
"""Injected faults (``fail_at``, for the tests of the error paths): the rank exits without a word
(exit code 17), raises a shape error in its step, or stops answering."""


@dataclass(kw_only=True, slots=True)
class TrainArgs:
    """Everything one training run needs (JSON-serialisable, passed to every rank)."""

    model: dict[str, Any]
    profile: str
    mode: str = "adaptive"
    steps: int = 20
    batch: int = 1
    distribution: str = "longtail"
    min_len: int = 64
    max_len: int = 1024
    median: int | None = None
    corpus: str = "tinyshakespeare"
    data_dir: str | None = None
    memory_cap: int = 2**34
    margin: int = 0  # bytes of the cap kept free by every planner and static fit
    hysteresis: float = 0.0  # our planner's (mode "adaptive" only)
    strict: bool = False  # our planner's strict hysteresis (never slower than a static plan)
    lr: float = 3e-4
    seed: int = 0
    measure_memory: bool = False
    any_hardware: bool = False  # accept a profile measured on other hardware (plans may be off)
    log: str | None = None
    device: str = "cpu"  # "cpu" or "cuda" (each rank its own GPU), resolved by paradyse.placement
    backend: str = "gloo"  # "gloo" (CPU) or "nccl" (CUDA)
    fail_at: tuple[int, int, str] | None = None  # (rank, step, one of FAULTS): fault-injection tests

    def __post_init__(self) -> None:
        """Every option checked here, so that a bad one fails before any rank starts."""
        if self.mode not in MODES:
            raise PlanError(f"unknown mode {self.mode!r}", hint=f"choose one of {', '.join(MODES)}")
        for name in ("steps", "batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        if self.memory_cap <= 0:
            raise ConfigError(f"--memory-cap must be positive, got {self.memory_cap} bytes")
        if not 0 <= self.margin < self.memory_cap:
            raise ConfigError(
                f"--margin ({self.margin} bytes) must be >= 0 and below --memory-cap ({self.memory_cap} bytes)"
            )
        if self.hysteresis < 0:
            raise ConfigError(f"--hysteresis must be >= 0, got {self.hysteresis}")
        if self.hysteresis and self.mode != "adaptive":
            raise ConfigError(
                f"--hysteresis applies to --mode adaptive only (mode {self.mode!r})",
                hint="the paper's heuristic keeps its own 5 %; static plans never switch",
            )
        if (self.device, self.backend) not in (("cpu", "gloo"), ("cuda", "nccl")):
            raise ConfigError(
                f"device {self.device!r} with backend {self.backend!r}: use cpu with gloo or cuda with nccl"
            )
        if self.strict and not self.hysteresis:
            raise ConfigError(
                "--strict applies with --hysteresis > 0 only (without one every plan is the optimum)"
            )
        if self.fail_at is not None and (len(self.fail_at) != 3 or self.fail_at[2] not in FAULTS):
            raise ConfigError(f"fail_at must be (rank, step, one of {', '.join(FAULTS)}), got {self.fail_at}")

    def stream(self, p: int) -> TextStream:
        """The run's text stream for ``p`` ranks (loading the corpus checks it is long enough)."""
        lengths = LengthSampler(distribution=self.distribution, min_len=self.min_len, max_len=self.max_len,
                                median=self.median, multiple=ModelConfig.from_dict(self.model).seq_multiple(p), seed=self.seed)  # fmt: skip
        corpus = load_corpus(self.corpus, data_dir=self.data_dir)
        return TextStream(corpus, lengths, steps=self.steps, batch=self.batch)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainArgs:
        data = json.loads(text)
        if data.get("fail_at") is not None:
            data["fail_at"] = tuple(data["fail_at"])
        return cls(**data)


class ParadyseLM(nn.Module):
    """Token embedding, final norm and head (replicated) around the switchable block stack.

    The byte-level LM by default (``vocab=256``, head tied to the embedding); :func:`paradyse.hf.load_hf`
    builds one with an HF model's vocabulary and (tied or own) head.
    """

    def __init__(
        self, cfg: ModelConfig, *, group=None, seed: int = 0, device=None, vocab: int = 256, tied: bool = True
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed + 7)
        self.cfg, self.group, self.vocab = cfg, group, vocab
        self.embed = nn.Parameter((torch.randn(vocab, cfg.hidden, generator=g) * 0.02).to(device))
        self.head = (
            None if tied else nn.Parameter((torch.randn(vocab, cfg.hidden, generator=g) * 0.02).to(device))
        )
        self.stack = ParallelTransformer(cfg, group=group, seed=seed, device=device)
        self.norm = nn.Parameter(torch.ones(cfg.hidden, device=device))

    def replicated(self) -> list[nn.Parameter]:
        head = [] if self.head is None else [self.head]
        return [self.embed, *head, self.norm, *self.stack.replicated()]

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, plan, total_tokens: int) -> torch.Tensor:
        """This rank's share of the mean next-token loss over the whole sequence (local shard in)."""
        x = F.embedding(tokens, self.embed).to(self.cfg.torch_dtype)
        h = rms_norm(self.stack(x, plan), self.norm, self.cfg.eps)
        head = self.embed if self.head is None else self.head
        logits = h.float() @ head.float().t()
        return (
            F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1), reduction="sum")
            / total_tokens
        )

    def finish_grads(self) -> None:
        all_reduce_grads(self.replicated(), self.group)


def train_worker(args: TrainArgs, *, group=None, on_step=None) -> list[dict[str, Any]]:
    """Run the loop on this rank; returns (on every rank) the per-step records.

    ``on_step(record)`` is called on rank 0 after every step (the CLI's progress bar).
    """
    rank, p = rank_and_size(group)
    cfg = ModelConfig.from_dict(args.model)
    cfg.check_degree(p)
    profile = Profile.load(args.profile)
    place = Placement(device=args.device, backend=args.backend)
    hardware = hardware_id(place.backend, place.device_name())
    profile.check(model=cfg, world_size=p, hardware=None if args.any_hardware else hardware)
    models = profile.time_models()
    dev = place.local_device()
    torch.manual_seed(args.seed)
    model = ParadyseLM(cfg, group=group, seed=args.seed, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    stream = args.stream(p)
    planner = Planner(cap=args.memory_cap, margin=args.margin, layers=cfg.layers,
                      switch_cost=profile.switch_cost_s, hysteresis=args.hysteresis, strict=args.strict)  # fmt: skip
    heuristic = HeuristicState()
    records: list[dict[str, Any]] = []
    log = open(args.log, "a", encoding="utf-8") if (args.log and rank == 0) else None  # noqa: SIM115
    try:
        for step, (tokens, targets) in enumerate(stream):
            if args.fail_at is not None and args.fail_at[:2] == (rank, step):
                _inject(args.fail_at[2])
            s = tokens.shape[1]
            table = CostTable.build(cfg, p, s, models, batch=args.batch,
                                    extra_bytes=lm_bytes(cfg, s, p, batch=args.batch))  # fmt: skip
            record: dict[str, Any] = {"step": step, "seq_len": s}
            try:
                plan = _choose(args.mode, table, planner, heuristic, args, cfg)
            except PlanError as err:
                record.update(plan=None, oom=True, reason=str(err))
                records.append(record)
                _write(log, record)
                if on_step is not None and rank == 0:
                    on_step(record)
                continue
            record.update(plan=compress(plan.layers), predicted_s=plan.seconds, predicted_bytes=plan.memory,
                          reason=plan.reason)  # fmt: skip
            sl = s // p
            local_tokens = tokens[:, rank * sl : (rank + 1) * sl].to(dev)
            local_targets = targets[:, rank * sl : (rank + 1) * sl].to(dev)
            tracker = PeakMemory(model, dev) if args.measure_memory else None
            t0 = time.perf_counter()
            if tracker is not None:
                with tracker:
                    loss = train_step(model, opt, local_tokens, local_targets, plan.layers, args.batch * s)
            else:
                loss = train_step(model, opt, local_tokens, local_targets, plan.layers, args.batch * s)
            loss_all = loss.detach().clone()
            if p > 1:
                dist.all_reduce(loss_all, group=group)
            record["loss"] = float(loss_all)  # waits for the step to finish (CUDA runs asynchronously)
            record["time_s"] = time.perf_counter() - t0
            if tracker is not None:
                peak = torch.tensor([float(tracker.peak)], device=dev)
                if p > 1:
                    dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
                record["peak_bytes"] = int(peak.item())
                record["over_cap"] = bool(peak.item() > args.memory_cap)
            record["oom"] = False
            records.append(record)
            _write(log, record)
            if on_step is not None and rank == 0:
                on_step(record)
    finally:
        if log is not None:
            log.close()
    return records


def _inject(fault: str) -> None:
    if fault == "exit":
        os._exit(17)  # a rank dies without a word, as a crashed process would
    if fault == "error":
        torch.ones(2, 3) @ torch.ones(4, 5)  # a shape bug in this rank's step
    time.sleep(24 * 3600)  # "hang": the others time out


def _choose(mode: str, table: CostTable, planner: Planner, heuristic: HeuristicState, args: TrainArgs, cfg):
    limit = args.memory_cap - args.margin
    if mode == "adaptive":
        return planner.plan(table)
    if mode == "paradyse":
        plan = paradyse_plan(table, args.memory_cap, heuristic, batch=args.batch, margin=args.margin)
        if table.memory(plan.layers) > limit:
            raise PlanError(f"the heuristic's plan needs {table.memory(plan.layers)} bytes, over the cap")
        return plan
    plan = (mode,) * cfg.layers
    need = table.memory(plan)
    if need > limit:
        raise PlanError(
            f"static {mode} needs {need / 2**30:.2f} GiB per rank, over the {limit / 2**30:.2f} GiB cap (less margin)"
        )
    return Plan(layers=plan, seconds=table.seconds(plan), memory=need, reason="static")


def train_step(model: ParadyseLM, opt, tokens, targets, plan, total_tokens: int) -> torch.Tensor:
    """One forward + backward + AdamW step of ``plan`` on this rank's shard; returns its loss share."""
    loss = model.loss(tokens, targets, plan, total_tokens)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    model.finish_grads()
    opt.step()
    return loss


def _write(log, record: dict[str, Any]) -> None:
    if log is not None:
        log.write(json.dumps(record) + "\n")
        log.flush()
