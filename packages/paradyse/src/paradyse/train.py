"""The training loop: a byte-level LM whose block stack switches strategy per layer and per batch.

Runs on every rank of a process group (``paradyse train`` starts it under torchrun). Per step:
sample a sequence length from the stream, plan (``adaptive``: our :class:`Planner`; ``paradyse``:
the paper's heuristic; or one static strategy), run forward and backward with that plan, step AdamW,
and log the plan, predicted and measured time, and (with ``measure_memory``) the measured peak.

A plan is only run if it fits the memory cap by the analytic model; a static strategy that does not
fit is logged as an OOM step and skipped. With ``measure_memory`` every step's real peak is tracked
(``torch.distributed._tools.MemTracker``) and compared with the cap afterwards, on every rank.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from effcore.errors import EffmlError
from paradyse.comm import all_reduce_grads, rank_and_size
from paradyse.config import STRATEGIES, ModelConfig, PlanError
from paradyse.costmodel import Profile, hardware_id
from paradyse.data import LengthSampler, TextStream, load_corpus
from paradyse.memory_model import lm_bytes
from paradyse.model import ParallelTransformer, rms_norm
from paradyse.planner import CostTable, HeuristicState, Plan, Planner, compress, paradyse_plan

__all__ = ["ParadyseLM", "RankLostError", "TrainArgs", "train_step", "train_worker"]

MODES = ("adaptive", "paradyse", *STRATEGIES)


class RankLostError(EffmlError):
    """Another rank died or stopped answering; this rank stops instead of hanging."""

    exit_code = 3


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
    lr: float = 3e-4
    seed: int = 0
    measure_memory: bool = False
    any_hardware: bool = False  # accept a profile measured on other hardware (plans may be off)
    log: str | None = None
    fail_at: tuple[int, int] | None = None  # (rank, step): that rank exits there (fault-injection tests)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise PlanError(f"unknown mode {self.mode!r}", hint=f"choose one of {', '.join(MODES)}")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainArgs:
        data = json.loads(text)
        if data.get("fail_at") is not None:
            data["fail_at"] = tuple(data["fail_at"])
        return cls(**data)


class ParadyseLM(nn.Module):
    """Byte embedding and head (replicated) around the switchable block stack."""

    def __init__(self, cfg: ModelConfig, *, group=None, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed + 7)
        self.cfg, self.group = cfg, group
        self.embed = nn.Parameter(torch.randn(256, cfg.hidden, generator=g) * 0.02)
        self.stack = ParallelTransformer(cfg, group=group, seed=seed)
        self.norm = nn.Parameter(torch.ones(cfg.hidden))

    def replicated(self) -> list[nn.Parameter]:
        return [self.embed, self.norm, *self.stack.replicated()]

    def loss(self, tokens: torch.Tensor, targets: torch.Tensor, plan, total_tokens: int) -> torch.Tensor:
        """This rank's share of the mean next-byte loss over the whole sequence (local shard in)."""
        x = F.embedding(tokens, self.embed).to(self.cfg.torch_dtype)
        h = rms_norm(self.stack(x, plan), self.norm, self.cfg.eps)
        logits = h.float() @ self.embed.float().t()
        return F.cross_entropy(logits.reshape(-1, 256), targets.reshape(-1), reduction="sum") / total_tokens

    def finish_grads(self) -> None:
        all_reduce_grads(self.replicated(), self.group)


def _peak_tracker(model: nn.Module):
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(model)
    return tracker


def _rank_lost(err: Exception, rank: int) -> RankLostError:
    return RankLostError(
        f"lost contact with the other ranks ({type(err).__name__}: {str(err).splitlines()[0][:120]})"
    )


def train_worker(args: TrainArgs, *, group=None, on_step=None) -> list[dict[str, Any]]:
    """Run the loop on this rank; returns (on every rank) the per-step records.

    ``on_step(record)`` is called on rank 0 after every step (the CLI's progress bar).
    """
    rank, p = rank_and_size(group)
    cfg = ModelConfig.from_dict(args.model)
    cfg.check_degree(p)
    profile = Profile.load(args.profile)
    backend = dist.get_backend(group) if p > 1 else "gloo"
    profile.check(model=cfg, world_size=p, hardware=None if args.any_hardware else hardware_id(backend))
    models = profile.time_models()
    torch.manual_seed(args.seed)
    model = ParadyseLM(cfg, group=group, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    lengths = LengthSampler(distribution=args.distribution, min_len=args.min_len, max_len=args.max_len,
                            median=args.median, multiple=p, seed=args.seed)  # fmt: skip
    stream = TextStream(load_corpus(args.corpus, data_dir=args.data_dir), lengths, steps=args.steps,
                        batch=args.batch)  # fmt: skip
    planner = Planner(cap=args.memory_cap, layers=cfg.layers, switch_cost=profile.switch_cost_s)
    heuristic = HeuristicState()
    records: list[dict[str, Any]] = []
    log = open(args.log, "a", encoding="utf-8") if (args.log and rank == 0) else None  # noqa: SIM115
    try:
        for step, (tokens, targets) in enumerate(stream):
            if args.fail_at is not None and args.fail_at == (rank, step):
                os._exit(17)  # a rank dies without a word, as a crashed process would
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
            local_tokens = tokens[:, rank * sl : (rank + 1) * sl]
            local_targets = targets[:, rank * sl : (rank + 1) * sl]
            tracker = _peak_tracker(model) if args.measure_memory else None
            t0 = time.perf_counter()
            try:
                if tracker is not None:
                    with tracker:
                        loss = train_step(
                            model, opt, local_tokens, local_targets, plan.layers, args.batch * s
                        )
                else:
                    loss = train_step(model, opt, local_tokens, local_targets, plan.layers, args.batch * s)
                loss_all = loss.detach().clone()
                if p > 1:
                    dist.all_reduce(loss_all, group=group)
            except (RuntimeError, dist.DistBackendError) as err:
                raise _rank_lost(err, rank) from None
            record["time_s"] = time.perf_counter() - t0
            record["loss"] = float(loss_all)
            if tracker is not None:
                peak = torch.tensor([float(max(tracker.get_tracker_snapshot("peak").get(torch.device("cpu"), {})
                                               .get("Total", 0), 0))])  # fmt: skip
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


def _choose(mode: str, table: CostTable, planner: Planner, heuristic: HeuristicState, args: TrainArgs, cfg):
    if mode == "adaptive":
        return planner.plan(table)
    if mode == "paradyse":
        plan = paradyse_plan(table, args.memory_cap, heuristic, batch=args.batch)
        if table.memory(plan.layers) > args.memory_cap:
            raise PlanError(f"the heuristic's plan needs {table.memory(plan.layers)} bytes, over the cap")
        return plan
    plan = (mode,) * cfg.layers
    need = table.memory(plan)
    if need > args.memory_cap:
        raise PlanError(
            f"static {mode} needs {need / 2**30:.2f} GiB per rank, over the {args.memory_cap / 2**30:.2f} GiB cap"
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
