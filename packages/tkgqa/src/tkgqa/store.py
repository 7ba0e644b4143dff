"""The temporal KG store: quadruples (head, relation, tail, day) in numpy arrays behind a small protocol."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from tkgqa.names import NameIndex, kg_to_answer

__all__ = [
    "Fact",
    "FactStore",
    "NameLookup",
    "TemporalKG",
    "day_to_iso",
    "fact_texts",
    "iso_to_day",
    "kg_days",
]


def iso_to_day(text: str) -> int:
    """``YYYY-MM-DD`` to days since 1970-01-01 (numpy ``datetime64[D]``); ValueError when malformed."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-":
        raise ValueError(f"not a YYYY-MM-DD date: {text!r}")
    return int(np.datetime64(text, "D").astype(np.int64))


def day_to_iso(day: int) -> str:
    """Days since 1970-01-01 to ``YYYY-MM-DD``."""
    return str(np.datetime64(int(day), "D"))


@dataclass(frozen=True, slots=True)
class Fact:
    """One quadruple in KG form (underscored names) with its row and source line number."""

    row: int
    line: int
    head: str
    relation: str
    tail: str
    date: str

    @property
    def raw(self) -> str:
        """The KG line as in the source file: ``head\\trelation\\ttail\\tdate``."""
        return f"{self.head}\t{self.relation}\t{self.tail}\t{self.date}"

    @property
    def text(self) -> str:
        """The text that is embedded: names with spaces, then the date."""
        return " ".join(
            (kg_to_answer(self.head), kg_to_answer(self.relation), kg_to_answer(self.tail), self.date)
        )


@runtime_checkable
class FactStore(Protocol):
    """What the search tool, the planner and GenTKGQA's retrieval need from a KG back end.

    The embedded :class:`TemporalKG` implements it with numpy; a database can implement it too.
    Boolean masks are numpy arrays of length ``len(store)``; rows index facts ``0..len-1``.
    """

    entities: NameIndex
    relations: NameIndex
    source: str  # where the facts came from (a path, a DSN)
    digest: str  # identifies the exact facts (the file's SHA-256): the index cache key

    def __len__(self) -> int: ...

    def entity_id(self, name: str) -> int: ...

    def relation_id(self, name: str) -> int: ...

    def mask(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        relations: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        tails: Sequence[int] | None = None,
        entities: Sequence[int] | None = None,
    ) -> np.ndarray: ...

    def facts(self, rows: np.ndarray | Sequence[int]) -> list[Fact]: ...

    def days(self, rows: np.ndarray | Sequence[int]) -> np.ndarray: ...

    def columns(self, rows: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]: ...

    def texts(self) -> list[str]: ...


def kg_days(store: FactStore) -> tuple[int, int] | None:
    """The first and last day of the store's facts (None when it holds none)."""
    if not len(store):
        return None
    days = store.days(np.arange(len(store)))
    return int(days.min()), int(days.max())


def fact_texts(
    entities: Sequence[str],
    relations: Sequence[str],
    head: np.ndarray,
    rel: np.ndarray,
    tail: np.ndarray,
    day: np.ndarray,
) -> list[str]:
    """The embedding text of each fact (id columns over the two vocabularies), as :attr:`Fact.text`."""
    ents = [kg_to_answer(n) for n in entities]
    rels = [kg_to_answer(n) for n in relations]
    if not len(day):
        return []
    base = int(day.min())
    dates = [day_to_iso(d) for d in range(base, int(day.max()) + 1)]
    return [
        f"{ents[h]} {rels[r]} {ents[t]} {dates[d - base]}"
        for h, r, t, d in zip(head.tolist(), rel.tolist(), tail.tolist(), day.tolist(), strict=True)
    ]


class NameLookup:
    """``entity_id`` / ``relation_id`` over a store's ``entities`` and ``relations`` name tables (shared by
    the numpy and the DuckDB store)."""

    def entity_id(self, name: str) -> int:
        """Resolve an entity name (raw, answer form or a close spelling); raises UnknownNameError."""
        return self.entities.lookup(name)

    def relation_id(self, name: str) -> int:
        """Resolve a relation name like :meth:`entity_id`."""
        return self.relations.lookup(name)


class TemporalKG(NameLookup):
    """An in-memory TKG: int32 arrays ``head, rel, tail, day`` plus name indexes and source line numbers.

    ``day`` counts days since 1970-01-01. ``line`` is the 1-based line of each fact in its source
    (MultiTQ's full.txt numbering for kg_partial). ``source`` and ``digest`` identify the file it came from.
    """

    def __init__(
        self,
        *,
        entities: Sequence[str],
        relations: Sequence[str],
        head: np.ndarray,
        rel: np.ndarray,
        tail: np.ndarray,
        day: np.ndarray,
        line: np.ndarray | None = None,
        source: str = "",
        digest: str = "",
    ) -> None:
        n = len(head)
        if not (len(rel) == len(tail) == len(day) == n):
            raise ValueError("head, rel, tail and day must have the same length")
        self.entities = NameIndex(entities, kind="entity")
        self.relations = NameIndex(relations, kind="relation")
        self.head = np.asarray(head, dtype=np.int32)
        self.rel = np.asarray(rel, dtype=np.int32)
        self.tail = np.asarray(tail, dtype=np.int32)
        self.day = np.asarray(day, dtype=np.int32)
        self.line = np.arange(1, n + 1, dtype=np.int64) if line is None else np.asarray(line, np.int64)
        self.source = source
        self.digest = digest

    @classmethod
    def from_quads(
        cls,
        quads: Sequence[tuple[str, str, str, str]],
        *,
        lines: Sequence[int] | None = None,
        source: str = "",
        digest: str = "",
    ) -> TemporalKG:
        """Build from ``(head, relation, tail, YYYY-MM-DD)`` tuples in KG form; ids in first-seen order."""
        ents: dict[str, int] = {}
        rels: dict[str, int] = {}
        n = len(quads)
        h, r, t, d = (np.empty(n, np.int32) for _ in range(4))
        for i, (hd, rl, tl, date) in enumerate(quads):
            h[i] = ents.setdefault(hd, len(ents))
            r[i] = rels.setdefault(rl, len(rels))
            t[i] = ents.setdefault(tl, len(ents))
            d[i] = iso_to_day(date)
        return cls(entities=list(ents), relations=list(rels), head=h, rel=r, tail=t, day=d,
                   line=None if lines is None else np.asarray(lines), source=source, digest=digest)  # fmt: skip

    def __len__(self) -> int:
        return len(self.head)

    def subset(self, rows: np.ndarray | Sequence[int], *, label: str) -> TemporalKG:
        """The facts at ``rows`` (storage order kept) under the same entity and relation vocabularies.

        Names resolve exactly as in the whole KG. ``label`` names the selection in ``source``; the
        digest covers this KG's digest, the label and the rows, so the subset gets its own index.
        """
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        digest = hashlib.sha256(f"{self.digest}|{label}|".encode() + rows.tobytes()).hexdigest()
        return TemporalKG(entities=self.entities.names, relations=self.relations.names, head=self.head[rows],
                          rel=self.rel[rows], tail=self.tail[rows], day=self.day[rows], line=self.line[rows],
                          source=f"{self.source} [{label}]", digest=digest)  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"TemporalKG({len(self)} facts, {len(self.entities)} entities, {len(self.relations)} relations, "
            f"{self.date_range()})"
        )

    def date_range(self) -> tuple[str, str] | None:
        """First and last fact date (ISO), None when empty."""
        return (day_to_iso(self.day.min()), day_to_iso(self.day.max())) if len(self) else None

    def mask(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        relations: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        tails: Sequence[int] | None = None,
        entities: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Rows within ``[start, end]`` (days, inclusive) with any of the given relations / heads / tails.

        ``entities`` matches either side. Every given constraint must hold (AND); None means no constraint.
        """
        m = np.ones(len(self), dtype=bool)
        if start is not None:
            m &= self.day >= start
        if end is not None:
            m &= self.day <= end
        for ids, col in ((relations, self.rel), (heads, self.head), (tails, self.tail)):
            if ids is not None:
                m &= np.isin(col, np.asarray(list(ids), dtype=np.int32))
        if entities is not None:
            e = np.asarray(list(entities), dtype=np.int32)
            m &= np.isin(self.head, e) | np.isin(self.tail, e)
        return m

    def rows(self, mask: np.ndarray) -> np.ndarray:
        """Row indices of a mask, in storage order."""
        return np.flatnonzero(mask)

    def facts(self, rows: np.ndarray | Sequence[int]) -> list[Fact]:
        """The facts at ``rows`` (in the given order)."""
        names, rels = self.entities.names, self.relations.names
        out = []
        for i in np.asarray(rows, dtype=np.int64).tolist():
            out.append(Fact(row=i, line=int(self.line[i]), head=names[self.head[i]], relation=rels[self.rel[i]],
                            tail=names[self.tail[i]], date=day_to_iso(self.day[i])))  # fmt: skip
        return out

    def days(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Days since 1970-01-01 of the facts at ``rows``."""
        return self.day[np.asarray(rows, dtype=np.int64)]

    def columns(self, rows: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """The id columns ``head, rel, tail, day, line`` of the facts at ``rows`` (in the given order)."""
        rows = np.asarray(rows, dtype=np.int64)
        return {"head": self.head[rows], "rel": self.rel[rows], "tail": self.tail[rows], "day": self.day[rows],
                "line": self.line[rows]}  # fmt: skip

    def texts(self) -> list[str]:
        """One embedding text per fact: ``head relation tail date`` with underscores as spaces."""
        return fact_texts(self.entities.names, self.relations.names, self.head, self.rel, self.tail, self.day)

    def neighbourhood(
        self,
        seeds: Sequence[int],
        *,
        relations: Sequence[int] | None = None,
        start: int | None = None,
        end: int | None = None,
        hops: int = 1,
        limit: int | None = None,
    ) -> np.ndarray:
        """Rows of the ``hops``-hop subgraph around ``seeds`` (entity ids), filtered by relation and window.

        Rows come in breadth-first order (hop 1 first), each hop in storage order; ``limit`` caps the count.
        """
        frontier = set(int(s) for s in seeds)
        seen_ents = set(frontier)
        taken = np.zeros(len(self), dtype=bool)
        order: list[np.ndarray] = []
        base = self.mask(start=start, end=end, relations=relations)
        for _ in range(max(hops, 0)):
            if not frontier:
                break
            new = base & ~taken & self.mask(entities=sorted(frontier))
            rows = np.flatnonzero(new)
            taken |= new
            order.append(rows)
            nxt = set(self.head[rows].tolist()) | set(self.tail[rows].tolist())
            frontier = nxt - seen_ents
            seen_ents |= nxt
        out = np.concatenate(order) if order else np.zeros(0, np.int64)
        return out[:limit] if limit is not None else out

    def relation_counts(self, mask: np.ndarray) -> dict[str, int]:
        """Facts per relation name under ``mask``, most frequent first."""
        counts = np.bincount(self.rel[mask], minlength=len(self.relations))
        order = np.argsort(-counts, kind="stable")
        return {self.relations.names[i]: int(counts[i]) for i in order if counts[i]}
