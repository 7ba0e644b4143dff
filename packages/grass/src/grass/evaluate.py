"""Held-out evaluation: mean answer loss (teacher forcing) and GSM8K exact match of the final number
under greedy decoding."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from grass.data import IGNORE, Example, collate, final_number, prompt

__all__ = ["EvalResult", "answer_loss", "evaluate", "exact_match"]


@dataclass(frozen=True, slots=True)
class EvalResult:
    """``loss``: mean cross-entropy per answer token; ``accuracy``: exact-match share (None when not
    measured); ``examples``: how many were scored."""

    loss: float
    tokens: int
    accuracy: float | None
    examples: int

    def to_dict(self) -> dict:
        return asdict(self)


@torch.inference_mode()
def answer_loss(
    model: nn.Module, examples: list[Example], *, pad_id: int, batch: int = 8
) -> tuple[float, int]:
    """Mean token cross-entropy on the labelled (answer) tokens of ``examples``."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(examples), batch):
        b = {k: v.to(device) for k, v in collate(examples[start : start + batch], pad_id).items()}
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
        labels = b["labels"][:, 1:]
        nll = nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        total += float(nll)
        count += int((labels != IGNORE).sum())
    return total / max(count, 1), count


@torch.inference_mode()
def exact_match(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    max_new_tokens: int = 160,
    batch: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Share of problems whose greedy completion's final number equals the reference."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    hits = 0
    try:
        for start in range(0, len(examples), batch):
            chunk = examples[start : start + batch]
            enc = tokenizer([prompt(e.question) for e in chunk], return_tensors="pt", padding=True).to(device)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
            )
            texts = tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            for e, text in zip(chunk, texts, strict=True):
                # a completion ends where the model starts a new question
                hits += final_number(text.split("Question:", 1)[0]) == final_number("#### " + e.final)
            if progress:
                progress(min(start + batch, len(examples)), len(examples))
    finally:
        tokenizer.padding_side = side
    return hits / max(len(examples), 1)


def evaluate(
    model: nn.Module,
    tokenizer,
    examples: list[Example],
    *,
    generate: int = 0,
    max_new_tokens: int = 160,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Answer loss on every example; exact match on the first ``generate`` (GSM8K only)."""
    was_training = model.training
    model.eval()
    try:
        loss, tokens = answer_loss(model, examples, pad_id=tokenizer.pad_token_id)
        accuracy = None
        if generate > 0 and examples and examples[0].final:
            accuracy = exact_match(
                model, tokenizer, examples[:generate], max_new_tokens=max_new_tokens, progress=progress
            )
    finally:
        model.train(was_training)
    if not math.isfinite(loss):
        loss = float("nan")
    return EvalResult(loss=loss, tokens=tokens, accuracy=accuracy, examples=len(examples))
