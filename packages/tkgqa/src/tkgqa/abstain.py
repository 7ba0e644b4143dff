"""Knowing when not to answer: abstain with a reason when a question's entity, relation or time is not in the KG.

Shared by the planner and GenTKGQA's retrieval. :func:`assess` looks at a question before any search:
its linked entities (and the capitalised names that link to nothing), the best KG relation for its
relation words, and its dates against the KG's span; it returns an :class:`Assessment` holding an
:class:`Abstention` (or None) and the confidences an answer's score is built from.
"""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from effcore.errors import ConfigError
from tkgqa.linking import STOP_WORDS, TEMPLATE_WORDS, EntityLinker, Mention
from tkgqa.names import NameIndex, kg_to_answer
from tkgqa.parse import ParsedQuestion, date_window
from tkgqa.store import day_to_iso

__all__ = [
    "ABSTAIN_KINDS",
    "RELATION_THRESHOLDS",
    "Abstention",
    "AbstentionConfig",
    "Assessment",
    "assess",
    "relation_phrase",
]

ABSTAIN_KINDS = ("entity", "relation", "time", "empty")
"""Why an answer is withheld: an unknown entity, no matching relation, a time outside the KG, no fact found."""


@dataclass(frozen=True, slots=True)
class Abstention:
    """A withheld answer: one line saying why, its kind (:data:`ABSTAIN_KINDS`) and close KG names if any."""

    reason: str
    kind: str
    close_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ABSTAIN_KINDS:
            raise ValueError(f"unknown abstention kind {self.kind!r}")


RELATION_THRESHOLDS = {"all-MiniLM-L6-v2@64": 0.35, "hash-512": 0.2}
"""``min_relation_score`` per relation-scorer encoder, chosen on MultiTQ dev (never test): the 0.5% quantile
of dev questions' best-relation scores floored to 0.01, so at most 0.5% of dev questions abstain on it
(``benchmarks/calibrate_abstention.py``; ``results/abstention_calibration.json`` for MiniLM,
``..._hash.json`` for the model-free hash encoder). Another encoder has no calibrated value: no relation check."""


@dataclass(kw_only=True, slots=True)
class AbstentionConfig:
    """What to check. ``min_relation_score``: the best relation's score (cosine of the question's relation
    words to the relation name, plus the CAMEO lexicon bonus) below which no relation matches; None takes
    the encoder's value from :data:`RELATION_THRESHOLDS` (see :meth:`for_encoder`), or no relation check.
    ``unlinked_names``: abstain when a capitalised name in the question links to no KG entity and none of
    its words occurs in any KG name.
    """

    enabled: bool = True
    min_relation_score: float | None = None
    unlinked_names: bool = True
    min_name_chars: int = 4  # shorter capitalised runs ("How", "US") are not taken as names

    def __post_init__(self) -> None:
        if self.min_relation_score is not None and not -1.0 <= self.min_relation_score <= 2.0:
            raise ConfigError(f"min_relation_score must be in -1..2, got {self.min_relation_score}")

    def for_encoder(self, encoder_name: str) -> AbstentionConfig:
        """This config with ``min_relation_score`` resolved for the relation scorer's encoder."""
        if self.min_relation_score is not None:
            return self
        return replace(self, min_relation_score=RELATION_THRESHOLDS.get(encoder_name))


@dataclass(kw_only=True, slots=True)
class Assessment:
    """What :func:`assess` found: the abstention (None: answerable) and the confidences behind a score.

    ``entity_confidence``: the weakest used mention's matched share of its name's token weight (1 exact,
    0.9 partial, 0.8 by spelling); ``relation_confidence``: the best relation's score clipped to 0..1.
    """

    abstention: Abstention | None
    entity_confidence: float = 0.0
    relation_confidence: float = 0.0
    relation: str | None = None
    relation_score: float = 0.0  # the best relation's raw score (the threshold applies to it)
    phrase: str = ""
    notes: list[str] = field(default_factory=list)

    def confidence(self, answered: bool) -> float:
        """The answer's confidence: 0 when abstaining or without an answer, else the weaker of the two."""
        if self.abstention is not None or not answered:
            return 0.0
        return round(min(self.entity_confidence, self.relation_confidence), 3)


def relation_phrase(residual: str) -> str:
    """The question's relation words: the residual minus template words, stop words trimmed at both ends."""
    words = [w for w in residual.split() if w not in TEMPLATE_WORDS and w != "zzdate"]
    while words and words[0] in STOP_WORDS:
        words.pop(0)
    while words and words[-1] in STOP_WORDS:
        words.pop()
    return " ".join(words)


# Capitalised words that are no names: months the date parser left ("In June, the year of 2009") and
# words that start a question ("About which country ..."), as found on dev.
_NOT_NAMES = frozenset(m.lower() for m in (*calendar.month_name[1:], *calendar.month_abbr[1:])) | {
    "about",
    "how",
}


def _not_a_name(phrase: str) -> bool:
    return all(w.lower() in _NOT_NAMES for w in phrase.split())


def _mention_confidence(linker: EntityLinker, m: Mention) -> float:
    weight = sum(linker.idf.get(t, 1.0) for t in linker.bags[m.entity]) or 1.0
    return min(1.0, m.score / weight)


def assess(
    parsed: ParsedQuestion,
    mentions: Sequence[Mention],
    residual: str,
    *,
    linker: EntityLinker,
    entities: NameIndex,
    relation_scores: dict[str, float],
    kg_days: tuple[int, int] | None,
    config: AbstentionConfig,
) -> Assessment:
    """Entity, then time, then relation: the first failing check is the abstention's reason."""
    if not mentions:
        runs = [
            phrase
            for _, phrase in linker.unlinked_runs(parsed.clean, [])
            if len(phrase) >= config.min_name_chars
        ]
        name = runs[0] if runs else parsed.text.strip()
        close = tuple(kg_to_answer(n) for n in entities.suggest(name, 3)) if runs else ()
        what = f"no entity matches {name!r}" if runs else "no entity of this KG is named in the question"
        reason = what + (f"; close: {', '.join(close)}" if close else "")
        return Assessment(abstention=Abstention(reason, "entity", close))
    ent_conf = min(_mention_confidence(linker, m) for m in mentions)
    if config.unlinked_names:
        # Only names made of words no KG name uses ("Elon Musk"): a run of known words ("Legislative Council")
        # is a name the linker partly missed, and the linked entities may still answer.
        runs = [phrase for _, phrase in linker.unlinked_runs(parsed.clean, mentions)
                if len(phrase) >= config.min_name_chars and not linker.knows(phrase) and not _not_a_name(phrase)]  # fmt: skip
        if runs:
            close = tuple(kg_to_answer(n) for n in entities.suggest(runs[0], 3))
            reason = f"no entity matches {runs[0]!r}" + (f"; close: {', '.join(close)}" if close else "")
            return Assessment(abstention=Abstention(reason, "entity", close), entity_confidence=ent_conf)
    if kg_days is not None and parsed.dates:
        start, end = date_window(parsed)
        if (end is not None and end < kg_days[0]) or (start is not None and start > kg_days[1]):
            a, b = parsed.dates[0].span
            reason = (f"the question's time {parsed.text[a:b]!r} lies outside this KG's span "
                      f"({day_to_iso(kg_days[0])} to {day_to_iso(kg_days[1])})")  # fmt: skip
            return Assessment(abstention=Abstention(reason, "time"), entity_confidence=ent_conf)
    phrase = relation_phrase(residual)
    best = max(relation_scores, key=lambda r: relation_scores[r], default=None)
    score = relation_scores.get(best, 0.0) if best is not None else 0.0
    out = Assessment(abstention=None, entity_confidence=ent_conf, relation_confidence=max(0.0, min(1.0, score)),
                     relation=best, relation_score=round(score, 6), phrase=phrase)  # fmt: skip
    if best is None or (config.min_relation_score is not None and score < config.min_relation_score):
        out.abstention = Abstention(
            f"no relation in this KG matches {phrase or residual.strip()!r}", "relation"
        )
    return out
