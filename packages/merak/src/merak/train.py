"""``merak train``: a 3D-parallel training run under torchrun, from a job any rank can read.

Every rank loads the model, parallelises it with :func:`merak.parallelize` and trains on token
blocks of a real corpus: each step takes ``dp x microbatches x batch`` blocks, data-parallel rank
``d`` its own share. One rank (the first data-parallel replica's last stage, which sees the loss)
reports each step as a JSON line; at the end it reports every stage's busy and idle time of the last
step, gathered from all ranks.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.distributed as dist

from effcore.errors import ConfigError

__all__ = ["TrainJob", "corpus_ids", "train_worker"]

# the text each corpus trains on: WikiText-2's train split is not in the shared data, its valid split is
CORPORA = {"wikitext2": "valid", "tinyshakespeare": "train"}


@dataclass(kw_only=True)
class TrainJob:
    """Everything a rank needs to run its share of the job (JSON round trip)."""

    model: str
    mesh: tuple[int, int, int]
    schedule: str = "1f1b"
    partition: str = "time"
    recompute: float | None = None
    tp_overlap: bool = False
    batch: int = 1
    seq_len: int = 128
    microbatches: int = 4
    steps: int = 5
    lr: float = 1e-4
    seed: int = 0
    data: str = "wikitext2"
    data_dir: str | None = None
    device: str = "auto"  # where each rank computes: auto (its GPU if any), cpu, cuda
    fail_at: str | None = None  # "RANK:STEP:error|exit": that rank raises, or dies, at that step (tests)

    def __post_init__(self) -> None:
        self.mesh = tuple(self.mesh)  # type: ignore[assignment]
        for name in ("batch", "seq_len", "microbatches", "steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if len(self.mesh) != 3 or min(self.mesh) < 1:
            raise ConfigError(f"--mesh must be three positive sizes dp,tp,pp, got {self.mesh}")
        if self.data not in CORPORA:
            raise ConfigError(f"unknown --data {self.data!r}", hint=f"choose from {', '.join(CORPORA)}")
        if not self.lr > 0:
            raise ConfigError(f"--lr must be positive, got {self.lr}")

    @property
    def world(self) -> int:
        return self.mesh[0] * self.mesh[1] * self.mesh[2]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def corpus_ids(job: TrainJob, vocab_size: int) -> torch.Tensor:
    """The training text of ``job.data`` (``CORPORA``) tokenised with SmolLM2's tokenizer (ids folded
    into a smaller vocabulary for tiny models)."""
    from effcore.assets import load_text, load_tokenizer

    text = load_text(job.data, split=CORPORA[job.data], data_dir=job.data_dir)
    ids = torch.tensor(load_tokenizer("smollm2")(text)["input_ids"], dtype=torch.long)
    return ids % vocab_size


def _rank_device(requested: str) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) when CUDA is wanted and present, else the CPU."""
    from effcore.device import infer_device

    device = infer_device(requested)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _reporter(pm) -> bool:
    coords = pm.mesh.get_coordinate()  # (pp, dp, tp) of this rank
    return pm.is_last and coords[1] == 0 and coords[2] == 0


def train_worker(job_dict: dict[str, Any], group: Any) -> None:
    """Run the job on this rank (called by ``python -m merak.worker train JOB.json``)."""
    from effcore.lm import token_blocks
    from merak.models import load_model
    from merak.parallel import parallelize

    job = TrainJob(**job_dict)
    if dist.get_world_size() != job.world:
        raise ConfigError(f"the job's mesh {job.mesh} needs {job.world} ranks, got {dist.get_world_size()}")
    torch.manual_seed(job.seed)
    device = _rank_device(job.device)
    model = load_model(job.model, seed=job.seed, device=device)
    pm = parallelize(model, job.mesh, microbatch=(job.batch, job.seq_len), microbatches=job.microbatches,
                     schedule=job.schedule, partition=job.partition, recompute_ratio=job.recompute,
                     tp_overlap=job.tp_overlap, device=device)  # fmt: skip
    per_step = job.mesh[0] * job.microbatches * job.batch
    blocks = token_blocks(corpus_ids(job, model.config.vocab_size), block_size=job.seq_len)
    if len(blocks) < per_step:
        raise ConfigError(
            f"{job.data} has {len(blocks)} blocks of {job.seq_len} tokens, a step needs {per_step}"
        )
    optimizer = torch.optim.AdamW(pm.parameters(), lr=job.lr, weight_decay=0.0)
    dp_rank = pm.mesh["dp"].get_local_rank()
    fail_rank, fail_step, fail_mode = job.fail_at.split(":") if job.fail_at else ("-1", "-1", "")
    report = _reporter(pm)
    for step in range(job.steps):
        if dist.get_rank() == int(fail_rank) and step == int(fail_step):
            if fail_mode == "exit":
                os._exit(17)  # a rank that dies without a word (a crash, the OOM killer)
            raise RuntimeError(f"injected failure at step {step} (--fail-at)")
        start = (step * per_step) % (len(blocks) - per_step + 1)
        batch = blocks[start : start + per_step]
        mine = batch[dp_rank * per_step // job.mesh[0] : (dp_rank + 1) * per_step // job.mesh[0]]
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        mine = mine.to(device)
        loss = pm.train_step(mine, mine)
        optimizer.step()
        seconds = time.perf_counter() - t0
        if report:
            print(
                json.dumps({"event": "step", "step": step, "loss": loss.item(), "seconds": seconds}),
                flush=True,
            )
    busy = sum(e.end - e.start for e in pm.trace)
    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, {"rank": dist.get_rank(), "coords": list(pm.mesh.get_coordinate()),
                                  "stage": pm.stage_index, "busy_s": busy, "events": len(pm.trace)})  # fmt: skip
    if report:
        print(json.dumps({"event": "done", "ranks": rows, "plan": pm.plan.to_dict()["stages"]}), flush=True)
