"""The extractor: every type prompt of the schema filled per window, relations judged, windows merged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from effcore.errors import ConfigError
from promptie.backbone import Backbone
from promptie.data import Document, Entity, Event, Relation, Span
from promptie.decode import fill_slots
from promptie.grammar import SlotGrammar, SpanTrie
from promptie.prompts import Mode, Prompt, compose_all
from promptie.relations import Judge, candidates, statement
from promptie.schema import Schema
from promptie.spans import candidate_spans, windows

__all__ = ["ExtractConfig", "Extractor", "direct_prompt"]


@dataclass(kw_only=True, slots=True)
class ExtractConfig:
    mode: Mode = "composable"
    max_span_words: int = 12  # longest answer span in words (see the README for the gold spans it covers)
    max_new_tokens: int = 64  # per prompt; a prompt that hits it keeps its completed answers
    window_words: int = 160  # longer texts are cut into overlapping windows of this many words
    window_overlap: int = 40
    max_chars: int = 2_000_000  # refuse bigger inputs instead of running for hours
    threshold: float = 0.5  # relation acceptance; `promptie train` sets it from dev
    shared_prefix: bool = True  # encode each text once, share its KV cache, batch the prompts
    null_margin: float = 0.0  # subtracted from the null answer's logit at a slot's first step (tune-null)

    def __post_init__(self) -> None:
        if not math.isfinite(self.null_margin):
            raise ConfigError(f"null_margin must be a finite number, got {self.null_margin}")
        if self.max_span_words < 1 or self.max_new_tokens < 4:
            raise ConfigError("max_span_words must be >= 1 and max_new_tokens >= 4")
        if not 0 <= self.window_overlap < self.window_words:
            raise ConfigError(f"window_overlap must be in [0, window_words), got {self.window_overlap}")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")


def direct_prompt(rel, head_text: str) -> str:
    """The direct-generation baseline's prompt: the relation statement with the head filled and the
    tail as the slot (the LM writes the tails itself instead of judging given pairs)."""
    return rel.statement.replace("{head}", head_text)


class Extractor:
    """``extract(text)`` -> a :class:`Document` with entities, relations and events (character offsets)."""

    def __init__(self, backbone: Backbone, schema: Schema, config: ExtractConfig | None = None,
                 judge: Judge | None = None) -> None:  # fmt: skip
        self.backbone, self.schema = backbone, schema
        self.config = config or ExtractConfig()
        self.judge = judge
        self.prompts: list[Prompt] = compose_all(schema, self.config.mode)
        self.tokens = backbone.grammar_tokens(schema.separator, schema.null)

    def trie(self, text: str) -> tuple[SpanTrie, dict[str, list[tuple[int, int]]]]:
        spans = candidate_spans(text, max_words=self.config.max_span_words, separator=self.schema.separator)
        keys = list(spans)
        ids = self.backbone.encode_many([" " + k for k in keys])
        return SpanTrie(dict(zip(keys, ids, strict=True))), spans

    def fill(self, text: str, prompts: Sequence[str], n_slots: Sequence[int],
             null_margins: Sequence[float] | None = None) -> tuple[list, dict]:  # fmt: skip
        trie, spans = self.trie(text)
        grammars = [SlotGrammar(self.tokens, trie, n) for n in n_slots]
        out = fill_slots(self.backbone, text, prompts, grammars, shared_prefix=self.config.shared_prefix,
                         max_new_tokens=self.config.max_new_tokens, null_margins=null_margins)  # fmt: skip
        return out, spans

    def check_text(self, text: str) -> None:
        if not text.strip():
            raise ConfigError("the text is empty", hint="give some text, or --file with non-empty lines")
        if len(text) > self.config.max_chars:
            raise ConfigError(f"the text has {len(text):,} characters, more than max_chars={self.config.max_chars:,}",
                              hint="split it into files, or raise max_chars in the --config TOML")  # fmt: skip

    def extract(self, text: str) -> Document:
        """Whole text: windows of ``window_words`` with ``window_overlap`` shared words, merged."""
        return self.extract_margins(text, [self.config.null_margin])[0]

    def extract_margins(self, text: str, margins: Sequence[float]) -> list[Document]:
        """``extract(text)`` once per null margin; every margin's prompts decode in one batch per window
        (the ``tune-null`` sweep: one prefix, one decoding loop, instead of one extraction per margin)."""
        self.check_text(text)
        parts = windows(text, max_words=self.config.window_words, overlap=self.config.window_overlap)
        found = [self._window(text[w.start : w.end], margins) for w in parts]
        return [merge([(w.start, docs[i]) for w, docs in zip(parts, found, strict=True)], text)
                for i in range(len(margins))]  # fmt: skip

    def extract_window(self, text: str) -> Document:
        """One window (or sentence): one batched generation over every type prompt, then relations."""
        return self._window(text, [self.config.null_margin])[0]

    def _window(self, text: str, margins: Sequence[float]) -> list[Document]:
        rendered = [p.render(self.backbone.marker) for p in self.prompts] * len(margins)
        n_slots = [len(p.slots) for p in self.prompts] * len(margins)
        per_row = [m for m in margins for _ in self.prompts]
        answers, spans = self.fill(text, rendered, n_slots, per_row)
        k = len(self.prompts)
        return [self._document(text, answers[i * k : (i + 1) * k], spans) for i in range(len(margins))]

    def _document(self, text: str, answers: Sequence[list[list[str]]], spans) -> Document:
        doc = Document("", text)
        for p, slots in zip(self.prompts, answers, strict=True):
            if p.task == "entity":
                doc.entities += [Entity(s, e, p.type) for a in slots[0] for s, e in spans[a]]
            else:
                trig = [Span(s, e) for a in slots[p.slots.index("trigger")] for s, e in spans[a]]
                if trig:
                    args = [(role, Span(s, e)) for role, ans in zip(p.slots, slots, strict=True) if role != "trigger"
                            for a in ans for s, e in spans[a]]  # fmt: skip
                    doc.events.append(Event(p.type, tuple(sorted(set(trig))), tuple(sorted(set(args)))))
        doc.entities = sorted(set(doc.entities), key=lambda e: (e.start, e.end, e.type))
        if self.schema.relations and self.judge is not None:
            doc.relations = self.judge_relations(text, doc.entities)
        return doc

    def judge_relations(self, text: str, entities: Sequence[Entity]) -> list[Relation]:
        """Candidate pairs of ``entities`` -> filled relation prompts -> judged -> thresholded."""
        cands = candidates(self.schema, entities)
        if not cands or self.judge is None:
            return []
        scores = self.judge.scores(text, [statement(text, c) for c in cands])
        return [c.as_relation() for c, s in zip(cands, scores, strict=True) if s >= self.config.threshold]

    def direct_relations(self, text: str, entities: Sequence[Entity]) -> list[Relation]:
        """Baseline: for each head mention and relation type, the LM generates the tails (plain greedy:
        ``null_margin`` is tuned for the type prompts and does not apply here)."""
        jobs = [(r, h) for h in entities for r in self.schema.relations.values() if r.head == h.type]
        if not jobs:
            return []
        prompts = [
            direct_prompt(r, text[h.start : h.end]).replace("{tail}", self.backbone.marker(0))
            for r, h in jobs
        ]
        answers, spans = self.fill(text, prompts, [1] * len(jobs))
        by_span = {(e.start, e.end): e for e in entities}
        out = []
        for (r, h), slots in zip(jobs, answers, strict=True):
            for a in slots[0]:
                for s, e in spans[a]:
                    tail = by_span.get((s, e), Entity(s, e, r.tail))
                    if (s, e) != (h.start, h.end):
                        out.append(Relation(h, tail, r.name))
        return sorted(set(out), key=lambda x: (x.head.start, x.tail.start, x.type))


def _shift(doc: Document, offset: int) -> Document:
    def ent(e: Entity) -> Entity:
        return Entity(e.start + offset, e.end + offset, e.type)

    def sp(s: Span) -> Span:
        return Span(s.start + offset, s.end + offset)

    return Document(doc.id, "", [ent(e) for e in doc.entities],
                    [Relation(ent(r.head), ent(r.tail), r.type) for r in doc.relations],
                    [Event(v.type, tuple(sp(s) for s in v.triggers), tuple((r, sp(s)) for r, s in v.arguments))
                     for v in doc.events])  # fmt: skip


def merge(parts: Sequence[tuple[int, Document]], text: str) -> Document:
    """Union of per-window results shifted to full-text offsets; event frames of one type merge."""
    ents, rels, frames = set(), set(), {}
    for offset, doc in parts:
        d = _shift(doc, offset)
        ents.update(d.entities)
        rels.update(d.relations)
        for ev in d.events:
            trig, args = frames.setdefault(ev.type, (set(), set()))
            trig.update(ev.triggers)
            args.update(ev.arguments)
    return Document("", text, sorted(ents, key=lambda e: (e.start, e.end, e.type)),
                    sorted(rels, key=lambda r: (r.head.start, r.tail.start, r.type)),
                    [Event(t, tuple(sorted(tr)), tuple(sorted(ar))) for t, (tr, ar) in frames.items()])  # fmt: skip
