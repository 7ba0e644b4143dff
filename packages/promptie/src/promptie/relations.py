"""Relation extraction as consistency judgement: candidate pairs become filled relation prompts, a judge
(the LM's yes/no likelihood or a fine-tuned MiniLM cross-encoder) scores them, a dev-chosen threshold decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from promptie.backbone import Backbone
from promptie.data import Entity, Relation
from promptie.decode import next_token_logits
from promptie.schema import RelationType, Schema

__all__ = [
    "JUDGES",
    "Candidate",
    "CrossEncoderJudge",
    "Judge",
    "LMJudge",
    "best_threshold",
    "candidates",
    "judge_prompt",
    "statement",
]

JUDGES = ("lm", "minilm")


@dataclass(frozen=True, slots=True)
class Candidate:
    head: Entity
    tail: Entity
    relation: RelationType

    def as_relation(self) -> Relation:
        return Relation(self.head, self.tail, self.relation.name)


def statement(text: str, cand: Candidate) -> str:
    """The relation prompt filled with the pair's mentions: ``"John works for Apple."``."""
    return cand.relation.statement.replace("{head}", text[cand.head.start : cand.head.end]).replace(
        "{tail}", text[cand.tail.start : cand.tail.end]
    )


def judge_prompt(filled: str) -> str:
    """What the LM judge reads after the text: it answers `` yes`` or `` no``."""
    return f"Is this statement consistent with the text? {filled}"


def candidates(schema: Schema, entities: Sequence[Entity]) -> list[Candidate]:
    """Every ordered pair of distinct, non-identical mentions whose types fit a relation's signature."""
    out = []
    for h in entities:
        for t in entities:
            if (h.start, h.end) == (t.start, t.end):
                continue
            out += [
                Candidate(h, t, r) for r in schema.relations.values() if (r.head, r.tail) == (h.type, t.type)
            ]
    return out


class Judge(Protocol):
    name: str

    def scores(self, text: str, statements: Sequence[str]) -> list[float]:
        """P(consistent) of each filled statement given the text."""
        ...


class LMJudge:
    """The backbone's own judgement: softmax over the `` yes`` / `` no`` next-token logits."""

    name = "lm"

    def __init__(self, backbone: Backbone) -> None:
        self.backbone = backbone
        self.yes, self.no = backbone.encode(" yes")[0], backbone.encode(" no")[0]

    def scores(self, text: str, statements: Sequence[str]) -> list[float]:
        if not statements:
            return []
        logits = next_token_logits(self.backbone, text, [judge_prompt(s) for s in statements])
        pair = logits[:, [self.yes, self.no]].log_softmax(-1)
        return pair[:, 0].exp().tolist()


class CrossEncoderJudge(torch.nn.Module):
    """all-MiniLM-L6-v2 reading ``[CLS] text [SEP] statement [SEP]``, a linear head on the mean-pooled
    tokens, trained with binary cross-entropy (``promptie.train.train_judge``)."""

    name = "minilm"

    def __init__(self, encoder=None, tokenizer=None, *, device: str = "cpu", max_length: int = 160) -> None:
        super().__init__()
        if encoder is None:
            from effcore.assets import load_sentence_encoder

            encoder, tokenizer = load_sentence_encoder("minilm", device=device)
        self.encoder, self.tokenizer, self.max_length = encoder, tokenizer, max_length
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1).to(next(encoder.parameters()).device)

    def logits(self, texts: Sequence[str], statements: Sequence[str]) -> torch.Tensor:
        dev = next(self.encoder.parameters()).device
        enc = self.tokenizer(list(texts), list(statements), padding=True, truncation="only_first",
                             max_length=self.max_length, return_tensors="pt").to(dev)  # fmt: skip
        hidden = self.encoder(**enc).last_hidden_state
        m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return self.head((hidden * m).sum(1) / m.sum(1)).squeeze(-1)

    def scores(self, text: str, statements: Sequence[str]) -> list[float]:
        if not statements:
            return []
        was = self.training
        self.eval()
        with torch.inference_mode():
            out = self.logits([text] * len(statements), statements).sigmoid().tolist()
        self.train(was)
        return out

    def save(self, folder: Path) -> None:
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
            folder / "judge.safetensors",
        )

    def load(self, folder: Path) -> CrossEncoderJudge:
        from safetensors.torch import load_file

        self.load_state_dict(load_file(folder / "judge.safetensors"))
        return self


def best_threshold(
    scores: Sequence[float], labels: Sequence[bool], *, n_gold: int | None = None
) -> tuple[float, float]:
    """The threshold maximising F1 of ``score >= threshold`` on dev, and that F1.

    ``n_gold`` counts gold relations the candidates missed (so recall is against every gold relation).
    Ties pick the highest threshold (fewer false positives).
    """
    gold = n_gold if n_gold is not None else sum(labels)
    pairs = sorted(zip(scores, labels, strict=True), key=lambda x: -x[0])
    best, best_t, tp = 0.0, 1.0, 0
    for i, (s, y) in enumerate(pairs):
        tp += int(y)
        if i + 1 < len(pairs) and pairs[i + 1][0] == s:
            continue
        f1 = 2 * tp / (i + 1 + gold) if gold + i + 1 else 0.0
        if f1 > best:
            best, best_t = f1, s
    return best_t, best
