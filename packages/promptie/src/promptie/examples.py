"""Training examples: (text, prompt, target token ids) for slot filling, the LM judge and the direct baseline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from promptie.backbone import Backbone
from promptie.data import Document
from promptie.extractor import direct_prompt
from promptie.grammar import encode_target
from promptie.prompts import Prompt
from promptie.relations import candidates, judge_prompt, statement
from promptie.schema import Schema

__all__ = [
    "TASKS",
    "Example",
    "build_examples",
    "collate",
    "example_length",
    "gold_answers",
    "group_by_text",
    "shared_prefix_loss",
]

TASKS = ("slots", "judge", "direct")  # type prompts; LM yes/no judgement; the direct-generation baseline


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    prompt: str  # rendered with the backbone's markers
    target: tuple[int, ...]
    task: str


def _texts(text: str, spans, separator: str) -> list[str]:
    """Distinct span texts in order of first occurrence, without those containing the separator (they
    cannot be decoded: ``a | b`` as one answer reads as two, see ``spans.candidate_spans``)."""
    ordered = (text[s.start : s.end] for s in sorted(spans, key=lambda s: (s.start, s.end)))
    return list(dict.fromkeys(t for t in ordered if separator not in t))


def gold_answers(doc: Document, prompt: Prompt, *, separator: str) -> list[list[str]]:
    """Slot answers a prompt should produce for a gold document (every mention of the type)."""
    if prompt.task == "entity":
        return [_texts(doc.text, [e for e in doc.entities if e.type == prompt.type], separator)]
    evs = [e for e in doc.events if e.type == prompt.type]
    out = []
    for slot in prompt.slots:
        if slot == "trigger":
            out.append(_texts(doc.text, [s for e in evs for s in e.triggers], separator))
        else:
            out.append(_texts(doc.text, [s for e in evs for r, s in e.arguments if r == slot], separator))
    return out


def build_examples(docs: Sequence[Document], schema: Schema, prompts: Sequence[Prompt], bb: Backbone, *,
                   tasks: Sequence[str] = ("slots",)) -> list[Example]:  # fmt: skip
    """Every document x prompt (``slots``), gold-entity candidate pairs (``judge``: yes/no), and
    head x relation tails (``direct``)."""
    toks = bb.grammar_tokens(schema.separator, schema.null)
    yes, no = bb.encode(" yes")[:1], bb.encode(" no")[:1]
    out = []
    for doc in docs:
        if "slots" in tasks:
            for p in prompts:
                target = encode_target(toks, gold_answers(doc, p, separator=schema.separator))
                out.append(Example(doc.text, p.render(bb.marker), tuple(target), "slots"))
        gold = {(r.head, r.tail, r.type) for r in doc.relations}
        if "judge" in tasks:
            for c in candidates(schema, doc.entities):
                label = (c.head, c.tail, c.relation.name) in gold
                out.append(
                    Example(
                        doc.text, judge_prompt(statement(doc.text, c)), tuple(yes if label else no), "judge"
                    )
                )
        if "direct" in tasks:
            for h in doc.entities:
                for r in schema.relations.values():
                    if r.head != h.type:
                        continue
                    tails = _texts(doc.text, [t for (hh, t, rt) in gold if hh == h and rt == r.name],
                                   schema.separator)  # fmt: skip
                    prompt = direct_prompt(r, doc.text[h.start : h.end]).replace("{tail}", bb.marker(0))
                    out.append(Example(doc.text, prompt, tuple(encode_target(toks, [tails])), "direct"))
    return out


def collate(bb: Backbone, batch: Sequence[Example]) -> dict[str, torch.Tensor]:
    """Right-padded tensors; labels are -100 except on the target tokens."""
    if bb.kind == "seq2seq":
        srcs = [bb.source_ids(e.text, e.prompt) for e in batch]
        tgts = [list(e.target) for e in batch]
        w, v = max(map(len, srcs)), max(map(len, tgts))
        return {
            "input_ids": torch.tensor([s + [bb.pad_id] * (w - len(s)) for s in srcs]),
            "attention_mask": torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in srcs]),
            "labels": torch.tensor([t + [-100] * (v - len(t)) for t in tgts]),
        }
    seqs, labels = [], []
    for e in batch:
        ctx = bb.prefix_ids(e.text) + bb.prompt_ids(e.prompt)
        seqs.append(ctx + list(e.target))
        labels.append([-100] * len(ctx) + list(e.target))
    w = max(map(len, seqs))
    return {
        "input_ids": torch.tensor([s + [bb.pad_id] * (w - len(s)) for s in seqs]),
        "attention_mask": torch.tensor([[1] * len(s) + [0] * (w - len(s)) for s in seqs]),
        "labels": torch.tensor([lab + [-100] * (w - len(lab)) for lab in labels]),
    }


def example_length(bb: Backbone, e: Example) -> int:
    if bb.kind == "seq2seq":
        return len(bb.source_ids(e.text, e.prompt)) + len(e.target)
    return len(bb.prefix_ids(e.text)) + len(bb.prompt_ids(e.prompt)) + len(e.target)


def group_by_text(examples: Sequence[Example]) -> list[list[Example]]:
    """Examples of one text together (in first-seen order): they share one encoded prefix."""
    groups: dict[str, list[Example]] = {}
    for e in examples:
        groups.setdefault(e.text, []).append(e)
    return list(groups.values())


def shared_prefix_loss(bb: Backbone, group: Sequence[Example]) -> tuple[torch.Tensor, int]:
    """Summed target-token loss of one text's examples and the token count, for a causal LM: the prefix
    ``Text: S`` is encoded once (with gradient) and its KV cache repeated for every prompt, exactly as
    decoding does, so each text costs one prefix plus its prompts instead of one prefix per prompt."""
    dev = bb.device
    prefix = bb.prefix_ids(group[0].text)
    out = bb.model(input_ids=torch.tensor([prefix], device=dev), use_cache=True)
    cache = bb.cache_of(out)
    cache.batch_repeat_interleave(len(group))
    rows = [(bb.prompt_ids(e.prompt), list(e.target)) for e in group]
    width = max(len(p) + len(t) for p, t in rows)
    p0 = len(prefix)
    ids, labels, mask = [], [], []
    for p, t in rows:
        pad = width - len(p) - len(t)
        ids.append(p + t + [bb.pad_id] * pad)
        labels.append([-100] * len(p) + t + [-100] * pad)
        mask.append([1] * (p0 + len(p) + len(t)) + [0] * pad)
    pos = torch.arange(p0, p0 + width, device=dev).expand(len(rows), -1)
    logits = bb.model(input_ids=torch.tensor(ids, device=dev), attention_mask=torch.tensor(mask, device=dev),
                      position_ids=pos, **bb.with_cache(cache), use_cache=True).logits  # fmt: skip
    lab = torch.tensor(labels, device=dev)
    # position i predicts token i+1 of the suffix
    loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             lab[:, 1:].reshape(-1), ignore_index=-100, reduction="sum")  # fmt: skip
    return loss, int((lab[:, 1:] != -100).sum())
