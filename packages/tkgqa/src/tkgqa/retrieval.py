"""GenTKGQA stage 1: the temporal subgraph of a question (linked entities, chosen relations, mined range).

``retrieve_subgraph(store, question)`` links the question's entities (the planner's linker), asks a
back end (:mod:`tkgqa.mining`) for the relations and the time range, resolves an implied range ("after
X") from X's facts in the store, keeps the facts around the entities with a chosen relation inside the
range, and ranks them; the top ``n`` form the :class:`Subgraph`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from effcore.errors import ConfigError
from tkgqa.abstain import Abstention, AbstentionConfig
from tkgqa.linking import words_of
from tkgqa.mining import BACKENDS, LLMMiner, Mined, Miner, QuestionView, RuleMiner
from tkgqa.parse import period_of
from tkgqa.planner import Planner, residual_of
from tkgqa.relations import RelationScorer
from tkgqa.store import Fact, FactStore, day_to_iso, kg_days

__all__ = ["RetrievalConfig", "Subgraph", "SubgraphRetriever", "make_miner", "retrieve_subgraph"]


@dataclass(kw_only=True, slots=True)
class RetrievalConfig:
    """Stage-1 settings: subgraph size, relations kept, and how ties and references are read."""

    top_n: int = 6  # facts in the subgraph (GenTKGQA's best: about 5-6)
    relations: int = 3  # relations a back end may choose
    voice_weight: float = 0.15  # bonus of facts whose main entity sits where the question's voice puts it
    ref_occurrence: str = "first"  # which event of the reference entity bounds "after/before X"

    def __post_init__(self) -> None:
        if not 1 <= self.top_n <= 1000:
            raise ConfigError(f"top_n must be in 1..1000, got {self.top_n}", hint="GenTKGQA uses about 6")
        if not 1 <= self.relations <= 50:
            raise ConfigError(f"relations must be in 1..50, got {self.relations}")
        if self.ref_occurrence not in ("first", "last"):
            raise ConfigError(f"ref_occurrence must be 'first' or 'last', got {self.ref_occurrence!r}")


@dataclass(kw_only=True, slots=True)
class Subgraph:
    """The retrieved facts (best first) and how they were chosen.

    ``start``/``end``: the mined range in days (inclusive; None is open); ``time_source`` says where it
    came from. ``candidates``: facts that passed the filters before the top ``n`` were kept. With abstention on
    (the default), a question whose entity, relation or time is not in the KG gets no facts and ``abstention``
    says why; an empty subgraph always carries an ``empty`` abstention.
    """

    question: str
    backend: str
    entities: list[str]  # linked entities (KG names), text order
    seeds: list[str]  # the entities whose facts were searched (the reference entity is not one)
    relations: list[tuple[str, float]]  # chosen relations with the back end's scores, best first
    start: int | None
    end: int | None
    time_source: str
    facts: list[Fact]
    candidates: int
    notes: list[str] = field(default_factory=list)
    abstention: Abstention | None = None  # why not to answer from it (set even when abstention is off)
    confidence: float = 0.0  # of an answer read from it: 0 when abstaining or empty (tkgqa.abstain)

    @property
    def rows(self) -> list[int]:
        return [f.row for f in self.facts]

    @property
    def time_range(self) -> tuple[str | None, str | None]:
        """The mined range as ISO dates (None: open)."""
        return (None if self.start is None else day_to_iso(self.start),
                None if self.end is None else day_to_iso(self.end))  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["facts"] = [f.raw for f in self.facts]
        out["rows"] = self.rows
        out["start"], out["end"] = self.time_range
        return out


class SubgraphRetriever:
    """Builds subgraphs over one store with one back end; build once, call :meth:`retrieve` per question."""

    def __init__(self, store: FactStore, scorer: RelationScorer, miner: Miner | None = None,
                 config: RetrievalConfig | None = None, abstention: AbstentionConfig | None = None) -> None:  # fmt: skip
        self.store = store
        self.planner = Planner(store.entities.names, scorer, kg_days=kg_days(store), abstention=abstention)
        self.miner = miner or RuleMiner(scorer)
        self.cfg = config or RetrievalConfig()
        self.kg_days = kg_days(store)

    def view(self, question: str) -> tuple[QuestionView, list[int]]:
        """The miner's request for ``question`` and the seed entity ids (linked entities but the reference)."""
        p, mentions, ref, cue, _ = self.planner.analyse(question)
        names = self.store.entities.names
        seeds = [m.entity for m in mentions if m is not ref] or [m.entity for m in mentions]
        seeds = list(dict.fromkeys(seeds))
        residual = residual_of(p, mentions)
        candidates: list[str] = []
        if seeds:
            rels = self.store.columns(np.flatnonzero(self.store.mask(entities=seeds)))["rel"]
            counts = np.bincount(rels, minlength=len(self.store.relations))
            rel_names = self.store.relations.names
            found = sorted(np.flatnonzero(counts).tolist(), key=lambda i: (-counts[i], rel_names[i]))
            candidates = [rel_names[i] for i in found]
        kg_range = tuple(day_to_iso(d) for d in self.kg_days) if self.kg_days else None
        view = QuestionView(text=question, entities=[names[m.entity] for m in mentions], candidates=candidates,
                            kg_range=kg_range, parsed=p, mentions=mentions, residual=residual.replace("zzdate", " "),
                            reference=names[ref.entity] if ref is not None else None, cue=cue or None)  # fmt: skip
        return view, seeds

    def retrieve(self, question: str, *, top_n: int | None = None) -> Subgraph:
        n = self.cfg.top_n if top_n is None else top_n
        if n < 1:
            raise ConfigError(f"top_n must be >= 1, got {n}")
        view, seeds = self.view(question)
        names = self.store.entities.names
        sub = Subgraph(question=question, backend=self.miner.name, entities=view.entities,
                       seeds=[names[s] for s in seeds], relations=[], start=None, end=None, time_source="none",
                       facts=[], candidates=0)  # fmt: skip
        judged = self.planner.assess_parsed(view.parsed, view.mentions, view.residual,
                                            self.planner.scorer.scores(view.residual))  # fmt: skip
        sub.abstention = judged.abstention
        if judged.abstention is not None and self.planner.abstention.enabled:
            sub.notes.append(f"abstain ({judged.abstention.kind}): {judged.abstention.reason}")
            return sub
        self._fill(sub, view, seeds, n)
        if not sub.facts and sub.abstention is None:
            why = sub.notes[-1] if sub.notes else "no fact passed the filters"
            sub.abstention = Abstention(f"the subgraph is empty: {why}", "empty")
        sub.confidence = judged.confidence(bool(sub.facts))
        return sub

    def _fill(self, sub: Subgraph, view: QuestionView, seeds: list[int], n: int) -> None:
        """Mine relations and time, resolve the range, keep the top ``n`` facts (notes say what went missing)."""
        if not seeds:
            sub.notes.append("no entity linked")
            return
        mined = self.miner.mine(view, self.cfg.relations)
        sub.relations, sub.notes = mined.relations, list(mined.notes)
        if not mined.relations:
            sub.notes.append("no relation chosen")
            return
        rel_ids = [self.store.relation_id(r) for r, _ in mined.relations]
        sub.start, sub.end, sub.time_source = self._time(mined, seeds, rel_ids, sub.notes)
        if sub.start is not None and sub.end is not None and sub.start > sub.end:
            sub.notes.append("the mined range is empty")
            return
        rows = np.flatnonzero(
            self.store.mask(entities=seeds, relations=rel_ids, start=sub.start, end=sub.end)
        )
        sub.candidates = len(rows)
        sub.facts = self.store.facts(rows[self._rank(rows, mined, view, seeds)[:n]])

    def _time(self, mined: Mined, seeds: list[int], rel_ids: list[int], notes: list[str]):
        """The explicit range intersected with the one implied by the reference entity's event."""
        start, end = mined.start, mined.end
        source = "explicit" if start is not None or end is not None else "none"
        if mined.reference is None:
            return start, end, source
        ref = self.store.entity_id(mined.reference)
        others = [s for s in seeds if s != ref]
        with_seed = self.store.mask(entities=others) if others else None
        rows = np.zeros(0, np.int64)
        # The reference event: on the best-ranked relation that has one, preferably shared with a seed.
        for wanted in (True, False):
            for rel in rel_ids:
                around = self.store.mask(entities=[ref], relations=[rel])
                if wanted and with_seed is not None:
                    around &= with_seed
                if around.any():
                    rows = np.flatnonzero(around)
                    break
            if len(rows):
                break
        if not len(rows):
            notes.append(
                f"{mined.reference} has no fact with a chosen relation: its {mined.cue} range is unknown"
            )
            return start, end, source
        days = self.store.days(rows)
        d = int(days.min() if self.cfg.ref_occurrence == "first" else days.max())
        if mined.cue == "after":
            lo, hi = d + 1, None
        elif mined.cue == "before":
            lo, hi = None, d - 1
        else:
            lo, hi = period_of(d, (mined.cue or "same_day").removeprefix("same_"))
        start = lo if start is None else (start if lo is None else max(start, lo))
        end = hi if end is None else (end if hi is None else min(end, hi))
        implied = f"{mined.cue} {mined.reference} ({day_to_iso(d)})"
        return start, end, implied if source == "none" else f"explicit + {implied}"

    def _rank(self, rows: np.ndarray, mined: Mined, view: QuestionView, seeds: list[int]) -> np.ndarray:
        """Order of ``rows``: relation score + voice bonus + one per other seed in the fact; then time, then line."""
        cols = self.store.columns(rows)
        head, tail = cols["head"], cols["tail"]
        score = np.zeros(len(self.store.relations))
        for name, s in mined.relations:
            score[self.store.relation_id(name)] = s
        total = score[cols["rel"]]
        main_m = max((m for m in view.mentions if m.entity in seeds), key=lambda m: m.score, default=None)
        main = main_m.entity if main_m is not None else seeds[0]
        voice_head = main_m is not None and self.planner.is_subject(words_of(view.parsed.clean), main_m)
        total = total + self.cfg.voice_weight * ((head == main) if voice_head else (tail == main))
        for other in seeds:
            if other != main:
                total = total + ((head == other) | (tail == other))
        if mined.order:
            sign = 1 if mined.order == "first" else -1
        elif mined.cue in ("after", "before"):
            sign = 1 if mined.cue == "after" else -1
        elif (mined.start is None) != (mined.end is None):
            sign = 1 if mined.start is not None else -1  # nearest to the one given bound first
        else:
            sign = 0
        # np.lexsort: the last key is the primary one.
        return np.lexsort((cols["line"], sign * cols["day"].astype(np.int64), -np.round(total, 6)))


def make_miner(backend: str, store: FactStore, scorer: RelationScorer, *, base_url: str | None = None,
               model: str | None = None, api_key: str | None = None, timeout: float = 60.0,
               llm: str = "smollm2") -> tuple[Miner, Callable[[], None]]:  # fmt: skip
    """``(miner, close)`` for a back end of :data:`~tkgqa.mining.BACKENDS`.

    ``llm`` talks to an OpenAI-compatible server (``base_url``/``$TKGQA_BASE_URL``); ``local`` loads
    ``llm`` with transformers and serves it on a loopback port, so both go through the same client.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown retrieval back end {backend!r}", hint=f"use one of {', '.join(BACKENDS)}")
    if backend == "rules":
        return RuleMiner(scorer), lambda: None
    from tkgqa.policies import OpenAIChatPolicy

    close: Callable[[], None] = lambda: None  # noqa: E731 -- the closer of a remote server: nothing to stop
    if backend == "local":
        from tkgqa.llm import LocalChatModel
        from tkgqa.server import serve_in_thread

        chat = LocalChatModel(llm)
        server, base_url = serve_in_thread(chat.chat, model_name=llm)
        model, timeout, close = llm, max(timeout, 300.0), server.shutdown
    client = OpenAIChatPolicy(base_url=base_url, model=model, api_key=api_key, timeout=timeout)

    def complete(messages: list[dict[str, str]]) -> str:
        reply = client.complete(messages, use_tools=False)
        try:
            return str(reply.choices[0].message.content or "")
        except (AttributeError, IndexError, TypeError):
            return ""

    return LLMMiner(complete, store, name=backend), close


def retrieve_subgraph(store: FactStore, question_text: str, *, backend: str = "rules", top_n: int = 6,
                      relations: int = 3, abstain: bool = True, encoder=None, **llm_options: Any) -> Subgraph:  # fmt: skip
    """One question's subgraph (builds a :class:`SubgraphRetriever`; for many questions build one yourself).

    ``top_n`` facts, ``relations`` chosen relations at most (:class:`RetrievalConfig` checks both before any
    work); ``abstain=False`` retrieves for questions it would abstain on (``Subgraph.abstention`` still
    says why); ``encoder`` embeds relation names for the relation scorer (default MiniLM); ``llm_options`` go to
    :func:`make_miner` (``base_url``, ``model``, ``api_key``, ``timeout``, ``llm``).
    """
    if not question_text.strip():
        raise ConfigError("the question is empty", hint='ask e.g. "Who visited China on 8 May 2013?"')
    cfg = RetrievalConfig(top_n=top_n, relations=relations)
    if encoder is None:
        from tkgqa.embed import get_encoder

        encoder = get_encoder("minilm")
    scorer = RelationScorer(store.relations.names, encoder)
    miner, close = make_miner(backend, store, scorer, **llm_options)
    try:
        return SubgraphRetriever(store, scorer, miner, cfg, AbstentionConfig(enabled=abstain)).retrieve(
            question_text
        )
    finally:
        close()
