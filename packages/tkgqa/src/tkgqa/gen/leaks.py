"""The leak filter: generated training questions must not repeat a dev or test question, by text or by key."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from tkgqa.embed import HashEncoder
from tkgqa.gen.questions import GenQuestion, LeakKey
from tkgqa.linking import EntityLinker
from tkgqa.names import kg_to_answer
from tkgqa.parse import parse_question
from tkgqa.questions import Question
from tkgqa.relations import LEXICON, RelationScorer
from tkgqa.store import TemporalKG

__all__ = ["LeakFilter", "LeakReport", "normalise_question"]

# A held-out question's key takes up to its 3 likeliest relations: the filter removes more, not less.
_RELATIONS_PER_QUESTION = 3
_STOP = frozenset({"what", "which", "when", "with", "that", "this", "from", "have", "were", "same", "first", "last",
                   "before", "after", "month", "year", "zzdate"})  # fmt: skip


def _stems(text: str) -> set[str]:
    return {w[:5] for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in _STOP}


def normalise_question(text: str) -> str:
    """Lower case, punctuation dropped, whitespace collapsed: the text the leak filter compares."""
    return " ".join(re.sub(r"[^\w]+", " ", text.lower()).split())


@dataclass(kw_only=True, slots=True)
class LeakReport:
    """How many generated questions were kept and removed, and why (text or key), with a few examples."""

    generated: int
    kept: int
    removed_text: int
    removed_key: int
    held_out_questions: int
    examples: list[dict] = field(default_factory=list)


class LeakFilter:
    """Keys of held-out (dev/test) questions read from their text, model-free, on the KG's vocabularies.

    A held-out question's keys are every (linked entity, one of its 3 likeliest relations, each date period
    it names, or None without a date); a relation counts only when a word of its name (5-letter stem) or
    its lexicon cue is in the question, so "What is the capital of France?" has no key. A generated
    question leaks when its normalised text equals a held-out one or one of its own keys is among them.
    """

    def __init__(self, kg: TemporalKG, held_out: Sequence[Question]) -> None:
        self.linker = EntityLinker(kg.entities.names)
        self.scorer = RelationScorer(kg.relations.names, HashEncoder())
        self.rel_ids = {name: i for i, name in enumerate(kg.relations.names)}
        self.rel_stems = {name: _stems(kg_to_answer(name)) for name in kg.relations.names}
        self.cues = [(re.compile(p, re.I), rel) for p, rel, _ in LEXICON]
        self.n_held = len(held_out)
        self.texts = {normalise_question(q.question) for q in held_out}
        self.keys: set[LeakKey] = set()
        for q in held_out:
            self.keys.update(self.question_keys(q.question))

    def question_keys(self, text: str) -> set[LeakKey]:
        """The (entity, relation, period) keys read from a question's text."""
        parsed = parse_question(text)
        ents = {m.entity for m in self.linker.candidates(parsed.clean)}
        scores = self.scorer.scores(parsed.clean)
        words, cued = _stems(parsed.clean), {rel for p, rel in self.cues if p.search(parsed.clean)}
        top = sorted(scores, key=scores.get, reverse=True)[:_RELATIONS_PER_QUESTION]
        rels = [self.rel_ids[r] for r in top if r in cued or self.rel_stems[r] & words]
        periods: list[tuple[int, int] | None] = [(d.start, d.end) for d in parsed.dates] or [None]
        return set(itertools.product(ents, rels, periods))

    def leak(self, g: GenQuestion) -> str | None:
        """``"text"``, ``"key"`` or None."""
        if normalise_question(g.question.question) in self.texts:
            return "text"
        if any(k in self.keys for k in g.keys):
            return "key"
        return None

    def apply(
        self, generated: Sequence[GenQuestion], *, examples: int = 5
    ) -> tuple[list[GenQuestion], LeakReport]:
        """The generated questions that do not leak, and the report of those removed."""
        kept, counts, shown = [], {"text": 0, "key": 0}, []
        for g in generated:
            why = self.leak(g)
            if why is None:
                kept.append(g)
                continue
            counts[why] += 1
            if len(shown) < examples:
                shown.append({"question": g.question.question, "why": why})
        return kept, LeakReport(generated=len(generated), kept=len(kept), removed_text=counts["text"],
                                removed_key=counts["key"], held_out_questions=self.n_held, examples=shown)  # fmt: skip
