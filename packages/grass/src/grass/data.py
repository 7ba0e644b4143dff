"""Training and evaluation data: GSM8K (question -> worked answer) and Tiny Shakespeare (text blocks).

GSM8K examples are ``"Question: ...\\nAnswer: ..."`` with the calculator annotations ``<<...>>``
removed; only the answer tokens carry loss. Shakespeare examples are fixed-length token blocks
(every token carries loss). Every method sees the same examples in the same order: the order is a
function of the seed only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from effcore.errors import ConfigError

__all__ = ["TASKS", "Batches", "Example", "final_number", "load_task", "prompt"]

TASKS: tuple[str, ...] = ("gsm8k", "shakespeare")
IGNORE = -100


@dataclass(frozen=True, slots=True)
class Example:
    """Token ids and labels (``IGNORE`` where no loss); ``prompt_len`` tokens of question; the
    reference final answer for GSM8K."""

    ids: tuple[int, ...]
    prompt_len: int
    final: str = ""
    question: str = ""


def prompt(question: str) -> str:
    return f"Question: {question.strip()}\nAnswer:"


def _clean(answer: str) -> str:
    return re.sub(r"<<[^>]*>>", "", answer).strip()


def final_number(text: str) -> str | None:
    """The number a completion gives as its answer: after ``####`` if present, else the last number."""
    tail = text.split("####", 1)[1] if "####" in text else text
    numbers = re.findall(r"-?\d[\d,]*(?:\.\d+)?", tail)
    if not numbers:
        return None
    value = (numbers[0] if "####" in text else numbers[-1]).replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def load_task(
    task: str, split: str, tokenizer, *, seq_len: int, limit: int | None = None, data_dir: Path | None = None
) -> list[Example]:
    """Examples of ``task`` ("gsm8k" train|test, "shakespeare" train|valid), truncated to ``seq_len``."""
    from effcore.assets import load_gsm8k, load_text

    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}", hint=f"choose from {', '.join(TASKS)}")
    eos = tokenizer.eos_token_id
    if task == "gsm8k":
        out = []
        for p in load_gsm8k(split, data_dir=data_dir, limit=limit):
            head = tokenizer(prompt(p.question))["input_ids"]
            body = tokenizer(" " + _clean(p.answer))["input_ids"] + [eos]
            ids = (head + body)[:seq_len]
            if len(head) < len(ids):  # at least one answer token survives truncation
                out.append(Example(tuple(ids), len(head), p.final, p.question))
        return out
    text_split = {"train": "train", "test": "valid", "valid": "valid"}.get(split)
    if text_split is None:
        raise ConfigError(f"shakespeare has no split {split!r}", hint="train or test")
    ids = tokenizer(load_text("tinyshakespeare", text_split, data_dir=data_dir))["input_ids"]
    blocks = [tuple(ids[i : i + seq_len]) for i in range(0, len(ids) - seq_len + 1, seq_len)]
    return [Example(b, 0) for b in blocks[:limit]]


class Batches:
    """Padded ``(input_ids, attention_mask, labels)`` batches of ``batch`` examples, in an order
    drawn from ``seed`` (reshuffled each epoch); ``batch_at(i)`` is random access, so a resumed run
    continues with the same data."""

    def __init__(self, examples: list[Example], batch: int, *, seed: int, pad_id: int) -> None:
        if not examples:
            raise ConfigError(
                "no training examples: every question is longer than --seq-len", hint="raise --seq-len"
            )
        self.examples, self.batch, self.seed, self.pad_id = examples, batch, seed, pad_id
        self.per_epoch = max(1, len(examples) // batch)

    def _order(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.examples), generator=gen).tolist()

    def batch_at(self, index: int) -> dict[str, torch.Tensor]:
        epoch, pos = divmod(index, self.per_epoch)
        order = self._order(epoch)[pos * self.batch : (pos + 1) * self.batch]
        return collate([self.examples[i] for i in order], self.pad_id)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        index = 0
        while True:
            yield self.batch_at(index)
            index += 1


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded batch; labels are the ids on answer tokens and ``IGNORE`` elsewhere."""
    width = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.ids)
        ids[row, :n] = torch.tensor(e.ids)
        mask[row, :n] = 1
        labels[row, e.prompt_len : n] = ids[row, e.prompt_len : n]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}
