"""The deterministic MultiTQ planner: parse the question, link entities, then a few ``vector_search`` calls."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tkgqa.abstain import Abstention, AbstentionConfig, Assessment, assess
from tkgqa.linking import EntityLinker, Mention, words_of
from tkgqa.names import NameIndex, kg_to_answer
from tkgqa.parse import ParsedQuestion, date_window, parse_question, period_of
from tkgqa.relations import RelationScorer
from tkgqa.store import day_to_iso, iso_to_day

__all__ = ["PlanOutcome", "Planner", "PlannerConfig", "link_mentions", "residual_of"]

ToolCall = dict[str, Any]
Plan = Generator[ToolCall, list[dict], "PlanOutcome"]
_PROBE_K = 200
_HEAD_CUES = {"did", "does", "do", "has", "had", "have", "by", "will", "would"}
_SKIP_AFTER = {"last", "first", "ever", "once", "again", "also", "then", "for", "the"}
_VERBS = frozenset(
    "made make makes want wants wish wishes would will visit visits praise praises sign signs accuse "  # noqa: SIM905 -- a word list reads better as text
    "accuses condemn condemns criticise criticises criticize criticizes threaten threatens express "
    "expresses negotiate negotiates appeal appeals request requests reject rejects investigate "
    "investigates blame blames host hosts receive receives gave give gives provide provides spoke "
    "speak speaks use uses sought seek seeks meet meets met paid pay pays offer offers release "
    "releases return returns denounce denounces endorse endorses support supports ask asks engage "
    "engages demand demands consult consults".split()
)
_NOT_VERBS = {"united", "armed", "red", "federated", "based", "related", "occupied", "advanced"}
_REF_CUES = {"before", "after", "prior", "following", "since"}


@dataclass(kw_only=True, slots=True)
class PlannerConfig:
    """Choices the MultiTQ templates leave open, kept as settings (see the README's design notes)."""

    ref_occurrence: str = "first"  # which date of a repeated reference event: "first" or "last"
    voice_weight: float = 0.15  # bonus of the orientation the question's voice suggests
    max_tries: int = 3  # relation readings tried before giving up
    fuzzy_names: bool = True  # difflib fallback for names the token bags miss
    fuzzy_cutoff: float = 0.85
    # same-day ties of first/last: "line" (KG file order, as MultiTQ's gold) or "relevance"
    tie_break: str = "line"


@dataclass(kw_only=True, slots=True)
class PlanOutcome:
    """The planner's answers (best first), the question form it recognised and its working notes.

    ``abstention``: why the question should not be answered (None: answerable); ``abstained``: whether
    the answer was withheld for it (with abstention off, a flagged question is still answered);
    ``confidence``: 0..1, 0 without an answer (see :meth:`tkgqa.abstain.Assessment.confidence`).
    """

    answers: list[str]
    qtype: str
    notes: list[str] = field(default_factory=list)
    abstention: Abstention | None = None
    abstained: bool = False
    confidence: float = 0.0


@dataclass(frozen=True, slots=True)
class _F:
    head: str
    rel: str
    tail: str
    day: int
    score: float
    line: int = 0

    @classmethod
    def parse(cls, hit: dict) -> _F:
        h, r, t, d = hit["text"].split("\t")
        return cls(h, r, t, iso_to_day(d), float(hit.get("score", 0.0)), int(hit.get("line_no") or 0))

    def other(self, ent: str) -> str:
        return self.tail if self.head == ent else self.head


def _order_ties(facts: list[_F], sort: str, tie_break: str) -> list[_F]:
    """Time-sorted hits with same-day ties in KG line order (ascending for time_asc, descending for time_desc)."""
    if tie_break != "line" or sort == "relevance":
        return facts
    if sort == "time_asc":
        return sorted(facts, key=lambda f: (f.day, f.line))
    return sorted(facts, key=lambda f: (-f.day, -f.line))


def _fmt_time(day: int, level: str) -> str:
    iso = day_to_iso(day)
    return iso[: {"year": 4, "month": 7}.get(level, 10)]


def residual_of(p: ParsedQuestion, mentions: list[Mention]) -> str:
    """The question's words outside its entity mentions (dates are the placeholder ``zzdate``)."""
    words = words_of(p.clean)
    return " ".join(w for i, w in enumerate(words) if not any(m.start <= i < m.end for m in mentions))


def link_mentions(linker: EntityLinker, parsed: ParsedQuestion, cfg: PlannerConfig) -> list[Mention]:
    """A parsed question's entity mentions in text order: every entity the planner's calls can filter on."""
    mentions = linker.link(parsed.clean)
    # A name the token bags missed (a spelling variant): try difflib on capitalised word runs.
    if cfg.fuzzy_names and len(mentions) < 2:
        mentions = sorted(
            mentions + linker.fuzzy(parsed.clean, mentions, cutoff=cfg.fuzzy_cutoff), key=lambda m: m.start
        )
    return mentions


class Planner:
    """Maps MultiTQ's six question forms to fixed sequences of ``vector_search`` calls (no LLM).

    ``run(question)`` is a generator: it yields tool-call argument dicts, receives each call's hits
    (the tool's public JSON: ``line_no``, ``score``, ``text``) and returns a :class:`PlanOutcome`.
    """

    def __init__(self, entity_names: list[str], scorer: RelationScorer, config: PlannerConfig | None = None, *,
                 kg_days: tuple[int, int] | None = None, abstention: AbstentionConfig | None = None) -> None:  # fmt: skip
        self.names = entity_names
        self.linker = EntityLinker(entity_names)
        self.entities = NameIndex(entity_names, kind="entity")
        self.scorer = scorer
        self.cfg = config or PlannerConfig()
        self.kg_days = kg_days  # the KG's first and last day: questions outside it are abstained on
        self.abstention = (abstention or AbstentionConfig()).for_encoder(scorer.encoder.name)

    # ---------------------------------------------------------------- analysis
    def analyse(self, question: str) -> tuple[ParsedQuestion, list[Mention], Mention | None, str, str]:
        """Parse, link, pick the reference mention (after before/after/same), its cue, and name the form."""
        p = parse_question(question)
        mentions = link_mentions(self.linker, p, self.cfg)
        words = words_of(p.clean)
        ref, cue = None, ""
        for m in mentions:
            window = words[max(0, m.start - 3) : m.start]
            if p.same and "same" in words[max(0, m.start - 5) : m.start]:
                ref, cue = m, "same"
            elif not p.same and (found := [w for w in window if w in _REF_CUES]):
                ref, cue = m, "before" if found[-1] in ("before", "prior") else "after"
        if p.same and ref is None and len(mentions) == 2:
            ref, cue = (
                mentions[1],
                "same",
            )  # "Who did China criticise X in the same month?": X is the reference
        date = p.dates[0] if p.dates else None
        if p.answer == "time":
            form = "time_" + (p.order or "equal")
        elif p.same and ref is not None:
            form = "equal_multi"
        elif ref is not None and p.order:
            form = "after_first" if p.order == "first" else "before_last"
        elif ref is not None:
            form = "before_after_entity"
        elif date is not None and date.relation != "on":
            form = "before_after_date" if not p.order else "first_last"
        elif p.order:
            form = "first_last"
        else:
            form = "equal"
        return p, mentions, ref, cue, form

    def is_subject(self, words: list[str], m: Mention) -> bool:
        """Is the mention the subject: after "did"/"by", or directly before a verb ("China condemned")?"""
        before = [w for w in words[max(0, m.start - 2) : m.start] if w != "the"]
        if before and before[-1] in _HEAD_CUES:
            return True
        after = [w for w in words[m.end : m.end + 3] if w not in _SKIP_AFTER]
        return bool(after) and (
            after[0] in _VERBS or (after[0].endswith("ed") and after[0] not in _NOT_VERBS)
        )

    # ---------------------------------------------------------------- plan
    def run(self, question: str) -> Plan:
        p, mentions, ref, cue, form = self.analyse(question)
        notes = [f"form={form}", "entities=" + ", ".join(self.names[m.entity] for m in mentions)]
        words = words_of(p.clean)
        residual = residual_of(p, mentions)
        rel_sims = self.scorer.scores(residual.replace("zzdate", ""))
        judged = self.assess_parsed(p, mentions, residual, rel_sims)
        if judged.abstention is not None and self.abstention.enabled:
            return self._outcome([], form, notes, judged)
        others = [m for m in mentions if m is not ref]
        main = max(others, key=lambda m: m.score) if others else None
        if main is None:
            notes.append("no entity found" if not mentions else "only a reference entity found")
            return self._outcome([], form, notes, judged)
        M = self.names[main.entity]
        voice_head = self.is_subject(words, main)
        window = date_window(p)
        if form.startswith("time_"):
            second = [m for m in mentions if m is not main]
            B = self.names[second[0].entity] if second else None
            answers = yield from self._time_answer(p, M, B, voice_head, rel_sims, window, notes)
        elif ref is not None:
            X = self.names[ref.entity]
            answers = yield from self._ref_answer(p, form, cue, M, X, voice_head, rel_sims, notes)
        else:
            answers = yield from self._plain_answer(p, form, M, voice_head, rel_sims, window, notes)
        return self._outcome(answers, form, notes, judged)

    def judge(self, question: str) -> Assessment:
        """Whether (and why not) ``question`` can be answered, before any search (the checks of :func:`assess`)."""
        p, mentions, *_ = self.analyse(question)
        residual = residual_of(p, mentions)
        return self.assess_parsed(p, mentions, residual, self.scorer.scores(residual.replace("zzdate", "")))

    def assess_parsed(
        self, p: ParsedQuestion, mentions: list[Mention], residual: str, rel_sims: dict[str, float]
    ) -> Assessment:
        """:func:`assess` on an analysed question (its parse, mentions, residual words and relation scores)."""
        return assess(p, mentions, residual, linker=self.linker, entities=self.entities, relation_scores=rel_sims,
                      kg_days=self.kg_days, config=self.abstention)  # fmt: skip

    def _outcome(self, answers: list[str], form: str, notes: list[str], judged: Assessment) -> PlanOutcome:
        """Answers, or the abstention: a flagged question (when abstention is on) or one no fact answered."""
        why = judged.abstention
        if why is None and not answers:
            why = Abstention(f"no fact in this KG answers it ({notes[-1]})", "empty")
        withheld = why is not None and (self.abstention.enabled or not answers)
        if why is not None:
            notes.append(f"abstain ({why.kind}): {why.reason}")
        return PlanOutcome(answers=[] if withheld else answers, qtype=form, notes=notes, abstention=why,
                           abstained=withheld, confidence=judged.confidence(bool(answers) and not withheld))  # fmt: skip

    @staticmethod
    def _call(query: str, *, entity: str | None = None, position: str | None = None, relation: str | None = None,
              start: int | None = None, end: int | None = None, sort: str = "relevance", top_k: int = 10) -> ToolCall:  # fmt: skip
        call: ToolCall = {"query": query, "sort": sort, "top_k": top_k}
        if entity:
            call["entity_filter_name"] = entity
            if position:
                call["entity_filter_position"] = position
        if relation:
            call["relation_filter"] = relation
        if start is not None:
            call["start_date"] = day_to_iso(start)
        if end is not None:
            call["end_date"] = day_to_iso(end)
        return call

    def _readings(self, facts: list[_F], M: str, voice_head: bool, rel_sims: dict[str, float],
                  partner: str | None = None, fallback: bool = False) -> list[tuple[float, str, bool]]:  # fmt: skip
        """(score, relation, M-is-head) readings supported by ``facts``, best first."""
        seen: dict[tuple[str, bool], int] = {}
        for f in facts:
            if partner is not None and f.other(M) != partner:
                continue
            if M not in (f.head, f.tail):
                continue
            key = (f.rel, f.head == M)
            seen[key] = seen.get(key, 0) + 1
        out = []
        for (rel, is_head), count in seen.items():
            s = rel_sims.get(rel, 0.0) + (self.cfg.voice_weight if is_head == voice_head else 0.0)
            out.append((s + 0.01 * np.log1p(count), rel, is_head))
        if fallback and len(facts) >= _PROBE_K:
            # The probe saw only the top facts of a busy entity: the best-scoring relations may be unseen.
            for rel in sorted(rel_sims, key=lambda r: -rel_sims[r])[:2]:
                if (rel, voice_head) not in seen:
                    out.append((rel_sims[rel] + self.cfg.voice_weight, rel, voice_head))
        return sorted(out, key=lambda t: (-t[0], t[1], t[2]))

    def _probe(self, query: str, entity: str, start=None, end=None) -> Plan:
        hits = yield self._call(query, entity=entity, start=start, end=end, top_k=_PROBE_K)
        return [_F.parse(h) for h in hits]

    def _plain_answer(self, p, form, M, voice_head, rel_sims, window, notes) -> Plan:
        start, end = window
        facts = yield from self._probe(p.text, M, start, end)
        readings = self._readings(facts, M, voice_head, rel_sims, fallback=True)
        for _, rel, is_head in readings[: self.cfg.max_tries]:
            pos = "front" if is_head else "back"
            sort = {"first": "time_asc", "last": "time_desc"}.get(p.order or "", "relevance")
            if form == "before_after_date":
                sort = "time_asc" if start is not None else "time_desc"  # nearest to the given date first
            hits = yield self._call(p.text, entity=M, position=pos, relation=rel, start=start, end=end, sort=sort,
                                    top_k=10 if sort == "relevance" else 30)  # fmt: skip
            found = _order_ties([_F.parse(h) for h in hits], sort, self.cfg.tie_break)
            answers = list(dict.fromkeys(kg_to_answer(f.other(M)) for f in found if f.other(M) != M))
            if answers:
                notes.append(f"reading: {rel} with {M} as {'head' if is_head else 'tail'}")
                return answers
        notes.append("no reading gave an answer")
        return []

    def _pair_facts(self, p, A: str, B: str, start=None, end=None) -> Plan:
        facts = yield from self._probe(p.text, A, start, end)
        pair = [f for f in facts if B in (f.head, f.tail)]
        if not pair and len(facts) >= _PROBE_K:
            facts = yield from self._probe(p.text, B, start, end)
            pair = [f for f in facts if A in (f.head, f.tail)]
        return pair

    def _time_answer(self, p, M, B, voice_head, rel_sims, window, notes) -> Plan:
        start, end = window
        if B is None:
            facts = yield from self._probe(p.text, M, start, end)
        else:
            facts = yield from self._pair_facts(p, M, B, start, end)
        readings = self._readings(facts, M, voice_head, rel_sims, partner=B)
        if not readings:
            notes.append("no fact links the entities")
            return []
        _, rel, is_head = readings[0]
        notes.append(f"reading: {rel} with {M} as {'head' if is_head else 'tail'}")
        sel = [
            f for f in facts if f.rel == rel and (f.head == M) == is_head and (B is None or f.other(M) == B)
        ]
        if p.order:
            # The probe may miss dates when the pair is frequent: ask for the chronological extreme.
            sort = "time_asc" if p.order == "first" else "time_desc"
            hits = yield self._call(p.text, entity=B or M, position=("back" if is_head else "front") if B else
                                    ("front" if is_head else "back"), relation=rel, start=start, end=end,
                                    sort=sort, top_k=_PROBE_K)  # fmt: skip
            extra = [_F.parse(h) for h in hits]
            sel += [f for f in extra if (f.head == M) == is_head and M in (f.head, f.tail)]
            days = sorted({f.day for f in sel}, reverse=p.order == "last")
        else:
            days = [f.day for f in sorted(sel, key=lambda f: -f.score)]
        return list(dict.fromkeys(_fmt_time(d, p.granularity) for d in days))

    def _ref_answer(self, p, form, cue, M, X, voice_head, rel_sims, notes) -> Plan:
        pair = yield from self._pair_facts(p, X, M)
        readings = self._readings(pair, M, voice_head, rel_sims, partner=X)
        if not readings:
            notes.append(f"no fact links {M} and {X}")
            return []
        for _, rel, is_head in readings[: self.cfg.max_tries]:
            ref_days = sorted(f.day for f in pair if f.rel == rel and (f.head == M) == is_head)
            d = ref_days[0] if self.cfg.ref_occurrence == "first" else ref_days[-1]
            pos = "front" if is_head else "back"
            if form == "equal_multi":
                s, e = period_of(d, p.same or "day")
                call = self._call(
                    p.text, entity=M, position=pos, relation=rel, start=s, end=e, sort="time_asc", top_k=50
                )
            elif cue == "before":
                call = self._call(
                    p.text, entity=M, position=pos, relation=rel, end=d - 1, sort="time_desc", top_k=50
                )
            else:
                call = self._call(
                    p.text, entity=M, position=pos, relation=rel, start=d + 1, sort="time_asc", top_k=50
                )
            hits = yield call
            found = _order_ties([_F.parse(h) for h in hits], call["sort"], self.cfg.tie_break)
            answers = list(dict.fromkeys(kg_to_answer(f.other(M)) for f in found if f.other(M) not in (M, X)))
            if answers:
                notes.append(
                    f"reading: {rel} with {M} as {'head' if is_head else 'tail'}; reference {day_to_iso(d)}"
                )
                return answers
        notes.append("no reading gave an answer")
        return []
