"""Instruction tuning of the generator on KG-generated questions: examples, a resumable loop, checkpoints."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from effcore.errors import ConfigError
from tkgqa.gen.model import GenTKGQA, SubgraphFeatures, add_lora, facts_text, instruction
from tkgqa.gen.questions import GenQuestion
from tkgqa.store import TemporalKG

__all__ = [
    "CHECKPOINT_FORMAT",
    "Example",
    "GenTrainConfig",
    "build_examples",
    "load_generator",
    "train_generator",
]

CHECKPOINT_FORMAT = "tkgqa-gen-generator-1"


@dataclass(kw_only=True, slots=True)
class GenTrainConfig:
    """The instruction-tuning recipe (the default fits about an hour on 2 CPU cores with SmolLM2-135M)."""

    llm: str = "smollm2"
    steps: int = 400
    batch: int = 4
    lr: float = 3e-4
    proj_lr: float = 1e-3
    lora_rank: int = 8
    facts: int = 6
    save_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        for name, lo in (("steps", 1), ("batch", 1), ("lora_rank", 1), ("facts", 1), ("save_every", 1)):
            if getattr(self, name) < lo:
                raise ConfigError(f"{name} must be >= {lo}, got {getattr(self, name)}")
        if self.lr <= 0 or self.proj_lr <= 0:
            raise ConfigError(f"learning rates must be > 0, got {self.lr} and {self.proj_lr}")


@dataclass(kw_only=True, slots=True)
class Example:
    """One training pair: the question, the subgraph rows shown (text and tokens) and the target answer."""

    question: str
    rows: list[int]
    target: str


def build_generator(lm, tokenizer, gnn_dim: int, cfg: GenTrainConfig) -> GenTKGQA:
    """The generator to train: ``lm`` wrapped with LoRA of ``cfg.lora_rank``, a fresh projection."""
    return GenTKGQA(add_lora(lm, rank=cfg.lora_rank), tokenizer, gnn_dim)


def build_examples(kg: TemporalKG, questions: Sequence[GenQuestion], retrieve: Callable[[str], list[int]],
                   *, facts: int, seed: int = 0) -> list[Example]:  # fmt: skip
    """Each question's retrieved subgraph with its supporting facts put in (training only), shuffled, cut to ``facts``.

    The target is the first gold answer; Hits@1 counts any gold answer, so one is enough to learn from.
    """
    rng = random.Random(seed)
    out = []
    for g in questions:
        gold = g.rows[: max(1, facts // 2)]
        rows = list(dict.fromkeys([*gold, *retrieve(g.question.question)]))[:facts]
        rng.shuffle(rows)
        out.append(Example(question=g.question.question, rows=rows, target=g.question.answers[0]))
    return out


def _trainable(model: GenTKGQA) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    lora = [p for n, p in model.lm.named_parameters() if p.requires_grad and "lora_" in n]
    return lora, list(model.proj.parameters())


def _state(model: GenTKGQA) -> dict[str, Any]:
    from peft import get_peft_model_state_dict

    return {"lora": get_peft_model_state_dict(model.lm), "proj": model.proj.state_dict()}


def train_generator(model: GenTKGQA, feats: SubgraphFeatures, examples: Sequence[Example], cfg: GenTrainConfig, *,
                    checkpoint: Path, identity: dict[str, Any], resume: bool = False, max_seconds: float | None = None,
                    progress: Callable[[int, int, float], None] | None = None) -> list[dict[str, float]]:  # fmt: skip
    """Train LoRA + ``proj`` for ``cfg.steps`` steps, saving to ``checkpoint`` every ``save_every`` and at the end.

    ``identity`` (KG and encoder fingerprints) is stored; ``resume`` continues a checkpoint with the same
    identity and recipe from its step (the batch order is a function of the seed and the step, so a resumed
    run sees the batches the uninterrupted one would). Returns the loss history.
    """
    if not examples:
        raise ConfigError("no training examples", hint="generate questions first: tkgqa gen-questions")
    lora, proj = _trainable(model)
    opt = torch.optim.AdamW(
        [{"params": lora, "lr": cfg.lr}, {"params": proj, "lr": cfg.proj_lr}], weight_decay=0.0
    )
    step, history = 0, []
    if resume and checkpoint.is_file():
        saved = _read(checkpoint)
        for key, want in (
            ("identity", identity),
            ("config", asdict(cfg) | {"steps": saved["config"]["steps"]}),
        ):
            if saved[key] != want:
                raise ConfigError(f"{checkpoint} was trained with another {key}: {saved[key]} (now {want})",
                                  hint="resume with the same options, or start over without --resume")  # fmt: skip
        _load_state(model, saved)
        opt.load_state_dict(saved["optimizer"])
        step, history = saved["step"], saved["history"]
    feats_of = [feats(ex.rows) for ex in examples]
    prompts = [instruction(ex.question, facts_text(feats.kg, ex.rows)) for ex in examples]
    start = time.perf_counter()
    model.train()
    while step < cfg.steps:
        epoch, pos = divmod(step * cfg.batch, len(examples))
        order = list(range(len(examples)))
        random.Random(cfg.seed * 100_003 + epoch).shuffle(order)
        idx = (order + order)[pos : pos + cfg.batch]
        batch = model.encode([prompts[i] for i in idx], [examples[i].target for i in idx])
        loss = model.loss(batch, torch.stack([feats_of[i] for i in idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        history.append({"step": step, "loss": round(float(loss.detach()), 4)})
        if progress:
            progress(step, cfg.steps, history[-1]["loss"])
        stop = max_seconds is not None and time.perf_counter() - start > max_seconds
        if step % cfg.save_every == 0 or step == cfg.steps or stop:
            _save(checkpoint, model, opt, cfg, identity, step, history)
        if stop:
            break
    model.eval()
    return history


def _save(
    path: Path, model: GenTKGQA, opt, cfg: GenTrainConfig, identity: dict, step: int, history: list
) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "config": asdict(cfg), "identity": identity, "step": step,
               "history": history, "optimizer": opt.state_dict(), "gnn_dim": model.proj.in_features, **_state(model)}  # fmt: skip
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def _read(path: Path) -> dict[str, Any]:
    hint = "train one: tkgqa gen-train --out gen.pt"
    if not Path(path).is_file():
        raise ConfigError(f"generator checkpoint {path} does not exist", hint=hint)
    try:
        p = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise ConfigError(
            f"{path} is not a tkgqa generator checkpoint ({type(exc).__name__})", hint=hint
        ) from None
    if not isinstance(p, dict) or p.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"{path} is not a tkgqa generator checkpoint ({CHECKPOINT_FORMAT})", hint=hint)
    return p


def _load_state(model: GenTKGQA, saved: dict[str, Any]) -> None:
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model.lm, saved["lora"])
    model.proj.load_state_dict(saved["proj"])


def load_generator(path: Path, identity: dict[str, Any], *, lm_factory: Callable[[str], tuple] | None = None,
                   device: str = "cpu") -> tuple[GenTKGQA, dict[str, Any]]:  # fmt: skip
    """A trained generator for the KG and encoder named by ``identity`` (another's checkpoint is a clear error)."""
    saved = _read(path)
    if saved["identity"] != identity:
        raise ConfigError(f"generator {path} was trained for {saved['identity']}, not {identity}",
                          hint="use the KG and --encoder it was trained with, or train one for these")  # fmt: skip
    cfg = GenTrainConfig(**saved["config"])
    if lm_factory is None:
        from effcore.assets import load_causal_lm

        lm, tok = load_causal_lm(cfg.llm)
    else:
        lm, tok = lm_factory(cfg.llm)
    model = build_generator(lm, tok, saved["gnn_dim"], cfg)
    _load_state(model, saved)
    return model.to(device).eval(), saved
