"""GenTKGQA stage 1, the question side: relation ranking and time mining, by rules or by an LLM.

Three interchangeable back ends (:data:`BACKENDS`) answer the same request (:class:`QuestionView`) with
the same :class:`Mined` record: ``rules`` (the planner's parser and relation scorer, no model), ``llm``
(any OpenAI-compatible server) and ``local`` (SmolLM2 / Gemma-3 behind tkgqa's own server). Both LLM back
ends send one prompt (:data:`MINING_PROMPT`) and read one JSON answer, validated against the KG.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tkgqa.agent import parse_arguments
from tkgqa.linking import Mention
from tkgqa.names import AmbiguousNameError, UnknownNameError
from tkgqa.parse import ParsedQuestion, date_window
from tkgqa.relations import RelationScorer
from tkgqa.store import FactStore, iso_to_day

__all__ = [
    "BACKENDS",
    "CUES",
    "MINING_PROMPT",
    "LLMMiner",
    "Mined",
    "Miner",
    "QuestionView",
    "RuleMiner",
    "parse_mined",
]

BACKENDS = ("rules", "llm", "local")
"""Relation ranking + time mining: the planner's rules, an OpenAI-compatible server, a local LLM."""
CUES = ("after", "before", "same_day", "same_month", "same_year")
"""How a reference entity's event bounds the answer: strictly after or before it, or in its period."""


@dataclass(kw_only=True, slots=True)
class QuestionView:
    """What a miner is given: the question, its linked entities and the KG's candidate relations.

    ``parsed``, ``mentions``, ``reference`` and ``cue`` are the planner's analysis (the rules use them);
    ``candidates`` are the relations of the facts around the linked entities, most frequent first.
    """

    text: str
    entities: list[str]
    candidates: list[str]
    kg_range: tuple[str, str] | None
    parsed: ParsedQuestion
    mentions: list[Mention]
    residual: str  # the question's words outside entity mentions and dates
    reference: str | None = None
    cue: str | None = None


@dataclass(kw_only=True, slots=True)
class Mined:
    """A back end's reading: ranked relations (name, score), an explicit range, a reference event, an order.

    ``start``/``end`` are inclusive days (None: open); ``reference`` is a KG entity whose event (on a
    chosen relation) bounds the range by ``cue``; ``order`` is "first", "last" or None.
    """

    relations: list[tuple[str, float]]
    start: int | None = None
    end: int | None = None
    reference: str | None = None
    cue: str | None = None
    order: str | None = None
    notes: list[str] = field(default_factory=list)


class Miner(Protocol):
    name: str

    def mine(self, view: QuestionView, k: int) -> Mined: ...


class RuleMiner:
    """The planner's reading: relation similarity of the residual words (+ CAMEO lexicon), parsed dates."""

    name = "rules"

    def __init__(self, scorer: RelationScorer) -> None:
        self.scorer = scorer

    def mine(self, view: QuestionView, k: int) -> Mined:
        sims = self.scorer.scores(view.residual)
        ranked = sorted(view.candidates, key=lambda r: (-sims.get(r, 0.0), r))[:k]
        start, end = date_window(view.parsed)
        cue = view.cue
        if cue == "same":
            cue = f"same_{view.parsed.same or 'day'}"
        return Mined(relations=[(r, round(sims.get(r, 0.0), 6)) for r in ranked], start=start, end=end,
                     reference=view.reference, cue=cue, order=view.parsed.order)  # fmt: skip


MINING_PROMPT = """You read questions about a temporal knowledge graph of dated events (head, relation, tail, date).
For the question, choose the graph relations it asks about and the time range its answer must lie in.
Answer with one JSON object and nothing else:
{"relations": [up to K relation names copied from the candidate list, most relevant first],
 "start": "YYYY-MM-DD" or "YYYY-MM" or "YYYY" or null,  // earliest date the answer's event may have
 "end": "YYYY-MM-DD" or "YYYY-MM" or "YYYY" or null,    // latest date
 "reference": an entity name from the question or null, // for "after X", "before X", "same month as X"
 "cue": "after" | "before" | "same_day" | "same_month" | "same_year" | null,
 "order": "first" | "last" | null}
Use start/end for dates written in the question ("in 2012", "before 5 May 2010"). Use reference + cue when
the time is given by another entity's event ("After X, who was the first to ..."): the graph resolves it.
Example: "After Japan, who was the first to visit China?" with candidates [Make_a_visit, Host_a_visit, Accuse]
-> {"relations": ["Make_a_visit", "Host_a_visit"], "start": null, "end": null, "reference": "Japan",
"cue": "after", "order": "first"}"""


def _user_message(view: QuestionView, k: int) -> str:
    span = f"{view.kg_range[0]} to {view.kg_range[1]}" if view.kg_range else "unknown"
    return (f"Question: {view.text}\nEntities in the question: {', '.join(view.entities) or 'none'}\n"
            f"The graph's dates: {span}\nK = {k}\nCandidate relations: {', '.join(view.candidates)}")  # fmt: skip


def _period(value: Any, *, end: bool) -> int:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` to the first (or, with ``end``, the last) day it covers."""
    import calendar

    text = str(value).strip()
    parts = text.split("-")
    if len(parts) == 3:
        return iso_to_day(text)
    if len(parts) == 2 and len(parts[0]) == 4 and parts[1].isdigit():
        y, m = int(parts[0]), int(parts[1])
        return iso_to_day(f"{y:04d}-{m:02d}-{calendar.monthrange(y, m)[1] if end else 1:02d}")
    if len(parts) == 1 and len(text) == 4 and text.isdigit():
        return iso_to_day(f"{text}-12-31" if end else f"{text}-01-01")
    raise ValueError(f"not a date: {text!r}")


def parse_mined(reply: str, view: QuestionView, store: FactStore, k: int) -> Mined:
    """An LLM's JSON reply as :class:`Mined`, checked against the KG; what fails a check is dropped and noted.

    Relations must resolve to candidate relations (close spellings allowed); dates must be ``YYYY[-MM[-DD]]``
    with start <= end; the reference must resolve to a KG entity and come with a known cue.
    """
    obj, repaired = parse_arguments(reply)
    if obj is None:
        return Mined(relations=[], notes=[f"the LLM's reply is not a JSON object: {reply[:120]!r}"])
    notes = ["repaired the LLM's JSON"] if repaired else []
    allowed = set(view.candidates)
    chosen: list[str] = []
    raw_rels = obj.get("relations")
    for name in raw_rels if isinstance(raw_rels, list) else []:
        try:
            rel = store.relations.names[store.relation_id(str(name))]
        except (UnknownNameError, AmbiguousNameError):
            notes.append(f"unknown relation {name!r} dropped")
            continue
        if rel not in allowed:
            notes.append(f"relation {rel!r} has no fact around the question's entities: dropped")
        elif rel not in chosen:
            chosen.append(rel)
    chosen = chosen[:k]
    bounds: dict[str, int | None] = {"start": None, "end": None}
    for key in bounds:
        if obj.get(key) not in (None, ""):
            try:
                bounds[key] = _period(obj[key], end=key == "end")
            except ValueError:
                notes.append(f"{key} {obj[key]!r} is not YYYY[-MM[-DD]]: dropped")
    if bounds["start"] is not None and bounds["end"] is not None and bounds["start"] > bounds["end"]:
        notes.append("start after end: both dropped")
        bounds = {"start": None, "end": None}
    reference, cue = obj.get("reference"), obj.get("cue")
    if reference not in (None, ""):
        try:
            reference = store.entities.names[store.entity_id(str(reference))]
        except (UnknownNameError, AmbiguousNameError):
            notes.append(f"unknown reference entity {reference!r} dropped")
            reference = None
    else:
        reference = None
    if reference is not None and cue not in CUES:
        notes.append(f"cue {cue!r} is not one of {', '.join(CUES)}: reference dropped")
        reference = None
    order = obj.get("order") if obj.get("order") in ("first", "last") else None
    return Mined(relations=[(r, round(1.0 / (1 + i), 6)) for i, r in enumerate(chosen)], start=bounds["start"],
                 end=bounds["end"], reference=reference, cue=cue if reference else None, order=order, notes=notes)  # fmt: skip


class LLMMiner:
    """Relation ranking and time mining by a chat model: ``complete(messages) -> text`` (one call per question).

    ``name`` is the back end (``llm`` or ``local``); the prompt and the validation are the same for both.
    """

    def __init__(
        self, complete: Callable[[list[dict[str, str]]], str], store: FactStore, *, name: str = "llm"
    ) -> None:
        self.complete = complete
        self.store = store
        self.name = name

    def mine(self, view: QuestionView, k: int) -> Mined:
        messages = [
            {"role": "system", "content": MINING_PROMPT},
            {"role": "user", "content": _user_message(view, k)},
        ]
        return parse_mined(self.complete(messages) or "", view, self.store, k)
