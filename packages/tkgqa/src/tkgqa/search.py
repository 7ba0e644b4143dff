"""AT2QA's ``vector_search`` tool: the authors' semantics (``compat``) and our stricter default."""

from __future__ import annotations

import calendar
import datetime as dt
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from effcore.errors import ConfigError, EffmlError
from tkgqa.ann import AnnIndex
from tkgqa.embed import Encoder
from tkgqa.index import FactIndex
from tkgqa.names import AmbiguousNameError, UnknownNameError
from tkgqa.store import FactStore, iso_to_day

__all__ = [
    "MODES",
    "POSITIONS",
    "SORTS",
    "Hit",
    "SearchTool",
    "ToolError",
    "parse_bound",
    "tool_schema",
    "top_order",
]

SORTS = ("relevance", "time_asc", "time_desc")
POSITIONS = ("front", "back")
MODES = ("default", "compat")
_COMPAT_POOL = 50  # AT2QA re-sorts only the 50 most similar facts by time
_MAX_TOP_K = 200


class ToolError(EffmlError):
    """A tool call the default mode refuses (the message is what the agent sees as the observation)."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result as AT2QA returns it (plus the store row and date)."""

    line_no: int
    score: float
    text: str
    row: int
    date: str

    def public(self, *, exact_score: bool = False) -> dict[str, Any]:
        """The fields AT2QA's tool returns to the model: line number, score, raw KG line.

        The score is rounded to 4 places (fewer tokens for the model) unless ``exact_score``: AT2QA
        sends the full float, which compat mode reproduces.
        """
        score = self.score if exact_score else round(self.score, 4)
        return {"line_no": self.line_no, "score": score, "text": self.text}


def top_order(sims: np.ndarray, k: int) -> np.ndarray:
    """``np.argsort(-sims, kind="stable")[:k]`` (ties in index order) without sorting every score."""
    if len(sims) <= k:
        return np.argsort(-sims, kind="stable")
    kth = np.partition(sims, len(sims) - k)[len(sims) - k]  # the k-th largest score
    cand = np.flatnonzero(sims >= kth)  # every row of the top k, in index order
    return cand[np.argsort(-sims[cand], kind="stable")][:k]


def parse_bound(value: str, *, end: bool) -> int:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` to a day; a start is the period's first day, an end its last."""
    text = str(value).strip()
    try:
        if len(text) == 4 and text.isdigit():
            y = int(text)
            return iso_to_day(f"{y:04d}-12-31" if end else f"{y:04d}-01-01")
        if len(text) == 7 and text[4] == "-":
            y, m = int(text[:4]), int(text[5:])
            d = calendar.monthrange(y, m)[1] if end else 1
            return iso_to_day(f"{y:04d}-{m:02d}-{d:02d}")
        dt.date.fromisoformat(text)
        return iso_to_day(text)
    except ValueError:
        raise ToolError(f"invalid date {value!r}: use YYYY, YYYY-MM or YYYY-MM-DD") from None


def tool_schema(*, with_top_k: bool = False) -> dict[str, Any]:
    """The OpenAI function-calling schema of ``vector_search`` (AT2QA's parameters; ``top_k`` optional)."""
    props: dict[str, Any] = {
        "query": {"type": "string", "description": "What to look for, in words (semantic search over facts)."},
        "start_date": {"type": "string", "description": "Inclusive lower bound on the fact date, YYYY-MM-DD."},
        "end_date": {"type": "string", "description": "Inclusive upper bound on the fact date, YYYY-MM-DD."},
        "sort": {"type": "string", "enum": list(SORTS),
                 "description": "relevance (default), or chronological: time_asc (earliest first), time_desc."},
        "entity_filter_name": {"type": "string", "description": "Keep only facts with this entity (exact name)."},
        "entity_filter_position": {"type": "string", "enum": list(POSITIONS),
                                   "description": "front: the entity is the subject (head); back: the object."},
        "relation_filter": {"type": "string", "description": "Keep only facts with this relation (exact name)."},
    }  # fmt: skip
    if with_top_k:
        props["top_k"] = {
            "type": "integer",
            "minimum": 1,
            "maximum": _MAX_TOP_K,
            "description": "Results (10).",
        }
    return {
        "type": "function",
        "function": {
            "name": "vector_search",
            "description": "Search the temporal knowledge graph (head, relation, tail, date facts) with optional "
            "date window, entity and relation filters, ranked by relevance or by time.",
            "parameters": {"type": "object", "properties": props, "required": ["query"]},
        },
    }


class SearchTool:
    """``vector_search`` over a :class:`FactStore` with a :class:`FactIndex` of the same facts.

    ``mode="compat"`` reproduces AT2QA (top 50 by relevance, then time-sorted; a bad date drops both
    bounds; an entity filter without a valid position, or an unknown sort, is silently ignored).
    ``mode="default"`` scans *all* matching facts for the time sorts (ties by relevance), resolves
    names robustly (spelling variants, suggestions for unknown names), matches either side when no
    position is given, and raises :class:`ToolError` instead of falling back silently.
    """

    def __init__(self, store: FactStore, index: FactIndex, encoder: Encoder, *, mode: str = "default",
                 top_k: int = 10, ann: AnnIndex | None = None) -> None:  # fmt: skip
        if mode not in MODES:
            raise ConfigError(f"unknown search mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
        if len(index) != len(store):
            raise ConfigError(
                f"index has {len(index)} rows but the KG has {len(store)} facts", hint="rebuild it"
            )
        if ann is not None and len(ann) != len(store):
            raise ConfigError(f"the approximate index has {len(ann)} rows but the KG has {len(store)} facts",
                              hint="rebuild it")  # fmt: skip
        self.store, self.index, self.encoder, self.mode, self.top_k = store, index, encoder, mode, top_k
        self.ann = ann
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.calls = 0

    def embed_query(self, query: str) -> np.ndarray:
        """The query vector (LRU-cached: agents repeat queries)."""
        if (v := self._qcache.get(query)) is not None:
            self._qcache.move_to_end(query)
            return v
        v = self.encoder.encode([query])[0]
        self._qcache[query] = v
        if len(self._qcache) > 4096:
            self._qcache.popitem(last=False)
        return v

    def __call__(self, query: str = "", **kwargs: Any) -> list[Hit]:
        return self.search(query, **kwargs)

    def search(
        self,
        query: str,
        start_date: str | None = None,
        end_date: str | None = None,
        sort: str | None = "relevance",
        entity_filter_name: str | None = None,
        entity_filter_position: str | None = None,
        relation_filter: str | None = None,
        top_k: int | None = None,
    ) -> list[Hit]:
        """Run one tool call; see the class docstring for the two modes' semantics."""
        self.calls += 1
        compat = self.mode == "compat"
        if not compat and not str(query or "").strip():
            raise ToolError("query is empty: say in words what to look for")
        k = self.top_k if (compat or top_k is None) else int(top_k)
        if not 1 <= k <= _MAX_TOP_K:
            raise ToolError(f"top_k must be in 1..{_MAX_TOP_K}, got {top_k}")
        sort = sort or "relevance"
        if sort not in SORTS:
            if not compat:
                raise ToolError(f"unknown sort {sort!r}: use one of {', '.join(SORTS)}")
            sort = "relevance"
        start, end = self._window(start_date, end_date, compat)
        filters: dict[str, Any] = {"start": start, "end": end}
        if relation_filter:
            filters["relations"] = self._resolve(relation_filter, "relation", compat)
        if entity_filter_name:
            pos = entity_filter_position
            if pos not in (*POSITIONS, None, ""):
                if not compat:
                    raise ToolError(
                        f"unknown entity_filter_position {pos!r}: use front (head) or back (tail)"
                    )
                pos = None
            ids = self._resolve(entity_filter_name, "entity", compat)
            if pos == "front":
                filters["heads"] = ids
            elif pos == "back":
                filters["tails"] = ids
            elif not compat:  # deliberate change: no position means either side, not "no filter"
                filters["entities"] = ids
        mask = self.store.mask(**filters)  # one call: a database store answers every filter in one query
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return []
        q = self.embed_query(query)
        want = _COMPAT_POOL if compat else k
        if self.ann is not None and (compat or sort == "relevance") and len(rows) > self.ann.exact_below:
            # Oversample the graph and rescore exactly below: the exact top k of more candidates.
            found = self.ann.search(q, max(4 * want, 64), None if len(rows) == len(self.store) else mask)
            if len(found) >= min(want, len(rows)):  # else too few survived the filter: score exactly
                rows = np.sort(found)  # storage order, so ties break as in the exact path
        every = len(rows) == len(self.store)  # no filter: score the matrix as is, no gathered copy
        sims = self.index.scores(q, None if every else rows)
        if compat:
            pool = top_order(sims, _COMPAT_POOL)
            rows, sims = rows[pool], sims[pool]
        days = self.store.days(rows)
        if sort == "relevance":
            order = top_order(sims, k)
        elif sort == "time_asc":
            order = np.lexsort((-sims, days))
        else:
            order = np.lexsort((-sims, -days.astype(np.int64)))
        order = order[:k]
        facts = self.store.facts(rows[order])
        return [Hit(line_no=f.line, score=float(s), text=f.raw, row=f.row, date=f.date)
                for f, s in zip(facts, sims[order].tolist(), strict=False)]  # fmt: skip

    def _window(
        self, start_date: str | None, end_date: str | None, compat: bool
    ) -> tuple[int | None, int | None]:
        if compat:
            try:
                s = iso_to_day(dt.date.fromisoformat(start_date).isoformat()) if start_date else None
                e = iso_to_day(dt.date.fromisoformat(end_date).isoformat()) if end_date else None
            except (ValueError, TypeError):
                return None, None  # AT2QA: one bad date silently drops both bounds
            return s, e
        s = parse_bound(start_date, end=False) if start_date else None
        e = parse_bound(end_date, end=True) if end_date else None
        if s is not None and e is not None and s > e:
            raise ToolError(f"empty date range: start_date {start_date} is after end_date {end_date}")
        return s, e

    def _resolve(self, name: str, kind: str, compat: bool) -> list[int]:
        names = self.store.entities if kind == "entity" else self.store.relations
        if compat:
            return names.at2qa(name)  # no match: an empty filter, hence no results, as in AT2QA
        try:
            return [names.lookup(name)]
        except (UnknownNameError, AmbiguousNameError) as err:
            raise ToolError(str(err)) from None

    def call_json(self, arguments: dict[str, Any], *, question: str | None = None) -> list[dict[str, Any]]:
        """Run a call given as a JSON-like dict; unknown keys are a ToolError (compat: ignored).

        ``query`` must be a non-empty string (default mode). Compat mode follows AT2QA's code: a call
        without ``query`` searches for ``question``; a ``query`` that is not a string gets no results
        (AT2QA's embedding request fails and its loop returns ``[]``); scores are not rounded.
        """
        allowed = {"query", "start_date", "end_date", "sort", "entity_filter_name", "entity_filter_position",
                   "relation_filter", "top_k"}  # fmt: skip
        compat = self.mode == "compat"
        extra = set(arguments) - allowed
        if extra and not compat:
            raise ToolError(
                f"unknown argument(s) {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
            )
        args = {k: v for k, v in arguments.items() if k in allowed}
        if compat and "query" not in args:
            args["query"] = question or ""
        if not isinstance(args.get("query"), str):
            if compat:
                return []
            raise ToolError(
                'query is required: a string saying what to look for, e.g. {"query": "visit China"}'
            )
        return [h.public(exact_score=compat) for h in self.search(**args)]
