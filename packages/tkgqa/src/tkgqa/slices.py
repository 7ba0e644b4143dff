"""Reduced real MultiTQ: the facts about the entities named in a seeded, qtype-balanced question sample.

A slice keeps, for each question it picks, every fact of ``kg_partial`` whose head or tail is an
entity the planner links in that question. The planner's tool calls always filter on one of those
entities, so on the slice they return what they return on the whole KG: the slice's MiniLM index
builds in minutes instead of 15-20 and exercises the same retrieval on those questions.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effcore.errors import ConfigError
from tkgqa.linking import EntityLinker
from tkgqa.parse import parse_question
from tkgqa.planner import PlannerConfig, link_mentions
from tkgqa.questions import QTYPES, SPLITS, Question, load_questions
from tkgqa.store import TemporalKG

__all__ = ["CI_SLICE", "KGSlice", "SliceSpec", "load_slice", "make_slice"]


@dataclass(frozen=True, slots=True)
class SliceSpec:
    """``SPLIT[:PER_QTYPE[:MAX_FACTS[:SEED]]]``: questions of SPLIT in seeded order, at most PER_QTYPE
    of each of the six qtypes, each kept only while the slice stays within MAX_FACTS facts."""

    split: str = "dev"
    per_qtype: int = 20
    max_facts: int = 40_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ConfigError(
                f"--slice: unknown split {self.split!r}", hint=f"use one of {', '.join(SPLITS)}"
            )
        if self.per_qtype < 1 or self.max_facts < 1:
            raise ConfigError(
                f"--slice {self}: questions per qtype and max facts must be >= 1",
                hint="e.g. --slice dev:20:40000:0",
            )

    @classmethod
    def parse(cls, text: str) -> SliceSpec:
        """Parse ``dev``, ``dev:20``, ``dev:20:40000`` or ``dev:20:40000:0`` (defaults fill the rest)."""
        parts = text.strip().split(":")
        if not 1 <= len(parts) <= 4 or not parts[0]:
            raise ConfigError(f"--slice {text!r}: expected SPLIT[:PER_QTYPE[:MAX_FACTS[:SEED]]]",
                              hint="e.g. --slice dev:20:40000:0")  # fmt: skip
        try:
            numbers = [int(p) for p in parts[1:]]
        except ValueError:
            raise ConfigError(f"--slice {text!r}: PER_QTYPE, MAX_FACTS and SEED are integers",
                              hint="e.g. --slice dev:20:40000:0") from None  # fmt: skip
        return cls(parts[0], *numbers)

    def __str__(self) -> str:
        return f"{self.split}:{self.per_qtype}:{self.max_facts}:{self.seed}"


CI_SLICE = SliceSpec()
"""The slice CI builds (``tkgqa index --slice dev``): 120 dev questions, at most 40,000 facts."""


@dataclass(kw_only=True, slots=True)
class KGSlice:
    """The sliced store, the questions it was cut for (by quid) and the entities it keeps."""

    spec: SliceSpec
    store: TemporalKG
    questions: list[Question]
    entities: list[str]


def make_slice(kg: TemporalKG, questions: list[Question], spec: SliceSpec,
               config: PlannerConfig | None = None) -> KGSlice:  # fmt: skip
    """Pick questions (seeded order, per-qtype quota, fact budget) and keep the facts of their entities.

    Questions whose entities would push the slice past ``spec.max_facts`` are passed over, so the
    sample leans towards entities with fewer facts than MultiTQ's average question. A question in
    which the planner links no entity is kept (it adds no facts; the planner cannot answer it).
    """
    cfg = config or PlannerConfig()
    linker = EntityLinker(kg.entities.names)
    order = sorted(questions, key=lambda q: q.quid)
    random.Random(spec.seed).shuffle(order)
    taken = np.zeros(len(kg), dtype=bool)
    kept: set[int] = set()
    quota: Counter[str] = Counter()
    chosen: list[Question] = []
    for q in order:
        if quota[q.qtype] >= spec.per_qtype:
            continue
        ents = {m.entity for m in link_mentions(linker, parse_question(q.question), cfg)} - kept
        grown = taken.copy()
        for e in ents:
            grown |= (kg.head == e) | (kg.tail == e)
        if int(grown.sum()) > spec.max_facts:
            continue
        taken, kept = grown, kept | ents
        quota[q.qtype] += 1
        chosen.append(q)
        if all(quota[t] >= spec.per_qtype for t in QTYPES):
            break
    store = kg.subset(np.flatnonzero(taken), label=f"slice {spec}")
    names = kg.entities.names
    return KGSlice(spec=spec, store=store, questions=sorted(chosen, key=lambda q: q.quid),
                   entities=sorted(names[e] for e in kept))  # fmt: skip


def load_slice(spec: SliceSpec, data_dir: str | Path | None = None) -> KGSlice:
    """The slice of MultiTQ's ``kg_partial`` for ``spec`` (questions from ``questions.jsonl.gz``)."""
    from tkgqa.loaders import load_multitq_kg

    return make_slice(load_multitq_kg(data_dir), load_questions(data_dir, split=spec.split), spec)
