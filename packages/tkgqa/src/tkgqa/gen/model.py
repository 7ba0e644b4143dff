"""GenTKGQA's generator: virtual knowledge tokens from the temporal GNN, fused into a small LM via ``inputs_embeds``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from effcore.errors import ConfigError
from tkgqa.gen.pretrain import PretrainedEncoder
from tkgqa.names import kg_to_answer
from tkgqa.store import TemporalKG, day_to_iso

__all__ = ["MARKERS", "Encoded", "GenTKGQA", "SubgraphFeatures", "add_lora", "facts_text", "instruction"]

MARKERS = ("[SUB]", "[REL]", "[OBJ]", "[TMIN]", "[TMAX]")
"""The virtual knowledge indicators, written in the instruction; each marker's last token gets its vector added."""


class SubgraphFeatures:
    """Pools the encoder's embeddings over a subgraph into five vectors: [SUB], [REL], [OBJ], [TMIN], [TMAX].

    ``gnn=False`` uses the entity table before message passing (the paper's "w/o T-GNN": plain temporal
    embeddings); ``time=False`` zeroes the two time vectors (no time tokens).
    """

    def __init__(
        self, enc: PretrainedEncoder, kg: TemporalKG, *, gnn: bool = True, time: bool = True
    ) -> None:
        self.kg, self.enc, self.use_time = kg, enc, time
        self.ent = enc.entity_table(kg) if gnn else enc.model.ent.weight.detach().cpu()
        self.rel = enc.model.rel.weight.detach().cpu()
        self.dim = self.ent.shape[1]

    @torch.no_grad()
    def __call__(self, rows: Sequence[int] | np.ndarray) -> torch.Tensor:
        """``[5, dim]``: mean-pooled heads, relations, tails; time embeddings of the earliest and latest day."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            raise ConfigError("the subgraph is empty: no fact to embed", hint="retrieve at least one fact")
        kg = self.kg
        sub = self.ent[torch.from_numpy(kg.head[rows].astype(np.int64))].mean(0)
        rel = self.rel[torch.from_numpy(kg.rel[rows].astype(np.int64))].mean(0)
        obj = self.ent[torch.from_numpy(kg.tail[rows].astype(np.int64))].mean(0)
        days = torch.tensor([int(kg.day[rows].min()), int(kg.day[rows].max())]) - self.enc.day0
        self.enc.model.time.eval()
        times = self.enc.model.time.cpu()(days) if self.use_time else torch.zeros(2, self.dim)
        return torch.stack([sub, rel, obj, times[0], times[1]])


def facts_text(kg: TemporalKG, rows: Sequence[int] | np.ndarray) -> str:
    """The subgraph as numbered lines ``head | relation | tail | date`` (answer-form names)."""
    return "\n".join(
        f"{i}. {kg_to_answer(kg.entities.names[kg.head[r]])} | {kg_to_answer(kg.relations.names[kg.rel[r]])} | "
        f"{kg_to_answer(kg.entities.names[kg.tail[r]])} | {day_to_iso(kg.day[r])}"
        for i, r in enumerate(np.asarray(rows, dtype=np.int64).tolist(), start=1)
    )


def instruction(question: str, facts: str) -> str:
    """The user turn: the marker tokens, the subgraph facts as text, the question."""
    return (f"Knowledge: {' '.join(MARKERS)}\nFacts (head | relation | tail | date):\n{facts}\n"
            f"Question: {question}\nAnswer with the entity name or the date only.")  # fmt: skip


@dataclass(kw_only=True, slots=True)
class Encoded:
    """A padded batch: ``ids``, ``mask``, ``labels`` (-100 outside the answer) and marker positions ``[B, 5]``."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    markers: torch.Tensor


def add_lora(lm: nn.Module, *, rank: int = 8, alpha: int = 16, dropout: float = 0.05) -> nn.Module:
    """Wrap the LM's attention projections with LoRA adapters (peft); the base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=["q_proj", "v_proj"],
                     task_type="CAUSAL_LM")  # fmt: skip
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing.*")
        return get_peft_model(lm, cfg)


class GenTKGQA(nn.Module):
    """A causal LM plus one linear layer ``proj`` (GNN dim -> LM embedding dim) for the five knowledge tokens.

    The projected vectors are *added* to the embeddings of the markers' last tokens: with a zero ``proj``
    the input is exactly the plain LM's, so the LM's output is unchanged (tested).
    """

    def __init__(self, lm: nn.Module, tokenizer, gnn_dim: int, *, max_tokens: int = 1024) -> None:
        super().__init__()
        self.lm, self.tok, self.max_tokens = lm, tokenizer, max_tokens
        hidden = lm.get_input_embeddings().weight.shape[1]
        self.proj = nn.Linear(gnn_dim, hidden)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def _render(self, user: str) -> str:
        return self.tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                            add_generation_prompt=True)  # fmt: skip

    def encode(self, prompts: Sequence[str], answers: Sequence[str] | None = None) -> Encoded:
        """Tokenise chat-rendered prompts (+ answer and end-of-turn), pad right, find each marker's last token."""
        seqs, labels, marks = [], [], []
        eos = self.tok.eos_token or ""
        for i, p in enumerate(prompts):
            text = self._render(p)
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
            pos = []
            for m in MARKERS:
                end = text.index(m) + len(
                    m
                )  # the first occurrence: the Knowledge line precedes any fact text
                pos.append(max(j for j, (a, b) in enumerate(offs) if a < end and b > a))
            lab = [-100] * len(ids)
            if answers is not None:
                extra = self.tok(answers[i] + eos, add_special_tokens=False)["input_ids"]
                ids, lab = ids + extra, lab + extra
            if len(ids) > self.max_tokens:
                raise ConfigError(f"a prompt takes {len(ids)} tokens, over the limit of {self.max_tokens}",
                                  hint="retrieve fewer facts (--facts)")  # fmt: skip
            seqs.append(ids)
            labels.append(lab)
            marks.append(pos)
        n = max(len(s) for s in seqs)
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        return Encoded(
            ids=torch.tensor([s + [pad] * (n - len(s)) for s in seqs]),
            mask=torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in seqs]),
            labels=torch.tensor([lab + [-100] * (n - len(lab)) for lab in labels]),
            markers=torch.tensor(marks),
        )

    def embeds(self, batch: Encoded, feats: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings with ``proj(feats[b, k])`` added at marker ``k``'s position (``feats``: ``[B, 5, d]``)."""
        dev = self.proj.weight.device
        x = self.lm.get_input_embeddings()(batch.ids.to(dev))
        if feats is None:
            return x
        add = torch.zeros_like(x)
        rows = torch.arange(x.shape[0], device=dev)[:, None].expand_as(batch.markers)
        add[rows, batch.markers.to(dev)] = self.proj(feats.to(dev)).to(x.dtype)
        return x + add

    def loss(self, batch: Encoded, feats: torch.Tensor | None) -> torch.Tensor:
        """Next-token loss on the answer tokens."""
        dev = self.proj.weight.device
        out = self.lm(inputs_embeds=self.embeds(batch, feats), attention_mask=batch.mask.to(dev),
                      labels=batch.labels.to(dev))  # fmt: skip
        return out.loss

    def logits(self, batch: Encoded, feats: torch.Tensor | None) -> torch.Tensor:
        dev = self.proj.weight.device
        return self.lm(inputs_embeds=self.embeds(batch, feats), attention_mask=batch.mask.to(dev)).logits

    @torch.no_grad()
    def answer(self, prompt: str, feats: torch.Tensor | None, *, max_new_tokens: int = 24) -> str:
        """Greedy decoding of one answer."""
        batch = self.encode([prompt])
        dev = self.proj.weight.device
        out = self.lm.generate(inputs_embeds=self.embeds(batch, None if feats is None else feats[None]),
                               attention_mask=batch.mask.to(dev), max_new_tokens=max_new_tokens, do_sample=False,
                               pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id)  # fmt: skip
        return self.tok.decode(out[0], skip_special_tokens=True).strip().split("\n")[0].strip()
