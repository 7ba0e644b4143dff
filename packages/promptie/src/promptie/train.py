"""Fine-tuning: the LM on slot-filling targets (fully or with LoRA), the MiniLM judge, the dev threshold;
resumable checkpoints; loading a trained extractor."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from effcore.errors import ConfigError
from promptie.backbone import Backbone, LoraSettings, add_lora, load_backbone
from promptie.checkpoint import check_schema, checkpoint_meta, latest, read_checkpoint, write_checkpoint
from promptie.data import Document
from promptie.examples import (
    TASKS,
    build_examples,
    collate,
    example_length,
    group_by_text,
    shared_prefix_loss,
)
from promptie.extractor import ExtractConfig, Extractor
from promptie.prompts import MODES, compose_all
from promptie.relations import JUDGES, CrossEncoderJudge, LMJudge, best_threshold, candidates, statement
from promptie.schema import Schema

__all__ = ["TrainConfig", "choose_threshold", "load_extractor", "train", "train_judge"]

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(kw_only=True, slots=True)
class TrainConfig:
    model: str = "smollm2"
    mode: str = "composable"
    tasks: list[str] = field(default_factory=lambda: ["slots"])
    steps: int = 200
    batch_size: int = 4  # texts per step (each with all its prompts)
    lr: float = 3e-4
    lora: bool = True  # False: full fine-tuning
    lora_r: int = 16
    lora_alpha: int = 32
    lora_top_layers: int = 0
    max_seq_len: int = 256  # longer examples are skipped (counted in the run's metadata)
    checkpoint_every: int = 50
    seed: int = 0
    judge: str | None = None  # "minilm" | "lm" | None (no relations)
    judge_steps: int = 300
    judge_batch_size: int = 32
    judge_lr: float = 3e-5

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        bad = [t for t in self.tasks if t not in TASKS]
        if bad or not self.tasks:
            raise ConfigError(f"tasks: {bad or self.tasks} not in {', '.join(TASKS)}")
        if self.judge is not None and self.judge not in JUDGES:
            raise ConfigError(f"judge: {self.judge!r} is not one of {', '.join(JUDGES)}")
        for name in ("steps", "batch_size", "checkpoint_every", "max_seq_len", "judge_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.lr < 1 or not 0 < self.judge_lr < 1:
            raise ConfigError(f"lr and judge_lr must be in (0, 1), got {self.lr}, {self.judge_lr}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"{source}: unknown field {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise ConfigError(f"{source}: {err}") from None


def _lora(cfg: TrainConfig) -> LoraSettings:
    return LoraSettings(r=cfg.lora_r, alpha=cfg.lora_alpha, top_layers=cfg.lora_top_layers)


def _order(n: int, seed: int, epoch: int) -> list[int]:
    idx = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(idx)
    return idx


def train(
    docs: Sequence[Document],
    schema: Schema,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    backbone: Backbone | None = None,
    device: str = "auto",
    resume: bool = True,
    progress: Progress | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the LM on ``docs`` for ``cfg.steps`` steps; resume from ``out_dir`` when it holds a checkpoint.

    The example order is a function of (seed, epoch), so a resumed run sees the batches an
    uninterrupted one would. Returns the run's record (losses, skipped examples, seconds).
    """
    torch.manual_seed(cfg.seed)
    bb = backbone or load_backbone(cfg.model, device=device)
    if cfg.lora:
        add_lora(bb, _lora(cfg))
    else:
        for p in bb.model.parameters():
            p.requires_grad_(True)
    prompts = compose_all(schema, cfg.mode)  # type: ignore[arg-type]
    examples = build_examples(docs, schema, prompts, bb, tasks=cfg.tasks)
    kept = [e for e in examples if example_length(bb, e) <= cfg.max_seq_len]
    if not kept:
        raise ConfigError(f"no training example fits max_seq_len={cfg.max_seq_len}", hint="raise max_seq_len")
    params = [p for p in bb.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    start, record = 0, {"losses": [], "seconds": 0.0}
    prev = latest(out_dir) if resume else None
    if prev is not None:
        ck = read_checkpoint(prev)
        check_schema(ck, schema)
        _load_weights(bb.model, ck.folder)
        if (ck.folder / "optimizer.pt").is_file():
            opt.load_state_dict(torch.load(ck.folder / "optimizer.pt", weights_only=True))
        start, record = ck.step, ck.meta["record"]
    run_meta = {"config": asdict(cfg), "model": cfg.model, "kind": bb.kind, "examples": len(examples),
                "skipped_too_long": len(examples) - len(kept), "documents": len(docs), **(meta or {})}  # fmt: skip
    bb.model.train()
    groups = group_by_text(kept)  # a step = batch_size texts with all their prompts
    t0 = time.perf_counter() - record["seconds"]
    for step in range(start, cfg.steps):
        epoch, pos = divmod(step * cfg.batch_size, len(groups))
        order = _order(len(groups), cfg.seed, epoch)
        batch = [groups[order[(pos + i) % len(groups)]] for i in range(cfg.batch_size)]
        total, count = 0.0, 0
        for group in batch:
            if bb.kind == "causal":
                loss_sum, n = shared_prefix_loss(bb, group)
            else:
                tensors = {k: v.to(bb.device) for k, v in collate(bb, group).items()}
                n = int((tensors["labels"] != -100).sum())
                loss_sum = bb.model(**tensors).loss * n
            (loss_sum / max(sum(_n_targets(g) for g in batch), 1)).backward()
            total, count = total + float(loss_sum.detach()), count + n
        loss = torch.tensor(total / max(count, 1))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        record["losses"].append(round(float(loss), 5))
        record["seconds"] = time.perf_counter() - t0
        if progress:
            progress("train", step + 1, cfg.steps)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            write_checkpoint(out_dir, step=step + 1, model=bb.model, optimizer=opt,
                             meta=checkpoint_meta(schema, **run_meta, record=record))  # fmt: skip
    bb.model.eval()
    return {**run_meta, "record": record, "backbone": bb}


def _n_targets(group) -> int:
    """Target tokens of a group that the loss counts (each target's tokens; the first is predicted
    from the prompt's last position, which the shared-prefix loss also scores)."""
    return sum(len(e.target) for e in group)


def _load_weights(model: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(folder / "weights.safetensors")
    own = dict(model.named_parameters())
    missing = [k for k in weights if k not in own]
    if missing:
        raise ConfigError(
            f"{folder}: weights {missing[:2]} do not fit this model", hint="was it trained on another model?"
        )
    with torch.no_grad():
        for k, v in weights.items():
            own[k].copy_(v)


def train_judge(docs: Sequence[Document], schema: Schema, cfg: TrainConfig, *, device: str = "cpu",
                progress: Progress | None = None) -> tuple[CrossEncoderJudge, dict[str, Any]]:  # fmt: skip
    """Fine-tune the MiniLM cross-encoder on gold-entity candidate pairs (positive: a gold relation)."""
    pairs = []
    for d in docs:
        gold = {(r.head, r.tail, r.type) for r in d.relations}
        pairs += [(d.text, statement(d.text, c), float((c.head, c.tail, c.relation.name) in gold))
                  for c in candidates(schema, d.entities)]  # fmt: skip
    if not pairs:
        raise ConfigError(
            "no relation candidates in the training documents", hint="does the schema define relations?"
        )
    torch.manual_seed(cfg.seed)
    judge = CrossEncoderJudge(device=device)
    judge.train()
    pos = sum(p[2] for p in pairs)
    weight = torch.tensor((len(pairs) - pos) / max(pos, 1.0))  # balance the rare positives
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.judge_lr)
    losses, t0 = [], time.perf_counter()
    for step in range(cfg.judge_steps):
        epoch, at = divmod(step * cfg.judge_batch_size, len(pairs))
        order = _order(len(pairs), cfg.seed, epoch)
        batch = [pairs[order[(at + i) % len(pairs)]] for i in range(cfg.judge_batch_size)]
        logits = judge.logits([b[0] for b in batch], [b[1] for b in batch])
        y = torch.tensor([b[2] for b in batch], device=logits.device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, y, pos_weight=weight.to(logits.device)
        )
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 5))
        if progress:
            progress("judge", step + 1, cfg.judge_steps)
    judge.eval()
    return judge, {
        "pairs": len(pairs),
        "positives": int(pos),
        "losses": losses,
        "seconds": time.perf_counter() - t0,
    }


def choose_threshold(judge, docs: Sequence[Document], schema: Schema) -> dict[str, float]:
    """The acceptance threshold maximising relation F1 on ``docs`` (dev) given gold entities."""
    scores, labels, n_gold = [], [], 0
    for d in docs:
        gold = {(r.head, r.tail, r.type) for r in d.relations}
        n_gold += len(gold)
        cands = candidates(schema, d.entities)
        scores += judge.scores(d.text, [statement(d.text, c) for c in cands])
        labels += [(c.head, c.tail, c.relation.name) in gold for c in cands]
    t, f1 = best_threshold(scores, labels, n_gold=n_gold)
    return {"threshold": t, "dev_f1_gold_entities": f1, "dev_candidates": len(scores)}


def load_extractor(path: Path, *, schema: Schema | None = None, device: str = "auto",
                   overrides: dict[str, Any] | None = None) -> Extractor:  # fmt: skip
    """A trained extractor from a checkpoint (the schema it was trained with unless ``schema``)."""
    ck = read_checkpoint(path)
    cfg = TrainConfig.from_dict(ck.meta["config"], source=f"{ck.folder}/meta.json")
    tuned = ck.null_margin
    tuned_d = {"null_margin": float(tuned["null_margin"])} if tuned else {}
    extract = ExtractConfig(
        **{"mode": cfg.mode, **ck.meta.get("extract", {}), **tuned_d, **(overrides or {})}
    )
    if schema is None:
        schema = ck.schema
    check_schema(ck, schema, allow_new_events=extract.mode == "composable")
    bb = load_backbone(ck.meta.get("model_path") or cfg.model, device=device)
    if cfg.lora:
        add_lora(bb, _lora(cfg))
    _load_weights(bb.model, ck.folder)
    bb.model.eval()
    judge = None
    if cfg.judge == "minilm" and (ck.folder / "judge").is_dir():
        judge = CrossEncoderJudge(device=str(bb.device)).load(ck.folder / "judge")
    elif cfg.judge == "lm":
        judge = LMJudge(bb)
    return Extractor(bb, schema, extract, judge)
