"""The DuckDB fact store: the :class:`~tkgqa.store.FactStore` protocol over one persisted database file.

Facts live in ``facts(row, line, head, rel, tail, day)`` with an index per column the search tool
filters on; names in ``entities(id, name)`` and ``relations(id, name)``; ``meta(key, value)`` holds the
format version, the import state, the source and the digest. Nothing but the two vocabularies is held
in memory, so the KG can be far larger than RAM. Written by :mod:`tkgqa.importer` or :func:`write_kg`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from effcore.errors import DataNotFoundError, EffmlError
from tkgqa.names import NameIndex
from tkgqa.store import Fact, NameLookup, TemporalKG, day_to_iso, fact_texts

__all__ = ["FORMAT", "DuckDBStore", "StoreError", "connect", "create_schema", "write_kg"]

FORMAT = 1
"""The layout version this tkgqa writes and reads; bump on any change to the tables or their meaning."""

_IMPORT_HINT = "import it again into a new file: tkgqa import FACTS.tsv --store duckdb --db NEW.duckdb"
_FACT_COLS = ("row", "line", "head", "rel", "tail", "day")
_INLINE_ROWS = 64  # up to this many rows are fetched by an inlined IN list (index lookups), more by a join
_SCHEMA = """
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
CREATE TABLE entities (id INTEGER NOT NULL, name VARCHAR NOT NULL);
CREATE TABLE relations (id INTEGER NOT NULL, name VARCHAR NOT NULL);
CREATE TABLE facts (row BIGINT NOT NULL, line BIGINT NOT NULL, head INTEGER NOT NULL, rel INTEGER NOT NULL,
                    tail INTEGER NOT NULL, day INTEGER NOT NULL);
"""
# One ART index per filter column of vector_search (date window, relation, head, tail; "either side"
# uses head and tail) and one on row for fetching hits. Built once at the end of an import: keeping
# them up to date during a bulk load costs far more than building them once.
_INDEXES = {
    "facts_row": "row",
    "facts_day": "day",
    "facts_rel": "rel",
    "facts_head": "head",
    "facts_tail": "tail",
}


class StoreError(EffmlError):
    """A database file that cannot be used: locked, another format, an unfinished import, not DuckDB."""


def connect(path: Path, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Open ``path``; a lock held by another process or an unreadable file is one :class:`StoreError` line."""
    try:
        # Rows are appended in row order and never changed, and whole-column reads rely on getting them
        # back in that order without a sort: DuckDB's default, pinned here.
        return duckdb.connect(str(path), read_only=read_only, config={"preserve_insertion_order": True})
    except duckdb.Error as err:
        text = str(err).splitlines()[0]
        if "lock" in text.lower():
            holder = re.search(r"PID (\d+)", text)
            who = f"process {holder.group(1)}" if holder else "another process"
            raise StoreError(f"{path} is locked by {who} (an import or another tkgqa command)",
                             hint="wait for it to finish or stop it, then run this again") from None  # fmt: skip
        raise StoreError(f"{path} is not a database this duckdb {duckdb.__version__} can open: {text}",
                         hint=_IMPORT_HINT) from None  # fmt: skip


def create_schema(con: duckdb.DuckDBPyConnection, meta: dict[str, Any]) -> None:
    """The empty tables of a new store, with ``meta`` (plus the format and ``state=importing``)."""
    con.execute("BEGIN")
    con.execute(_SCHEMA)
    set_meta(con, {**meta, "format": FORMAT, "state": "importing"})
    con.execute("COMMIT")


def set_meta(con: duckdb.DuckDBPyConnection, values: dict[str, Any]) -> None:
    """Upsert meta keys (values stored as JSON text)."""
    for key, value in values.items():
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, json.dumps(value)])


def read_meta(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    """The meta table, checked: a file without one or of another format is a :class:`StoreError`."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if "meta" not in tables:
        raise StoreError(
            f"{path} is a DuckDB file but not a tkgqa fact store (no meta table)", hint=_IMPORT_HINT
        )
    meta = {k: json.loads(v) for k, v in con.execute("SELECT key, value FROM meta").fetchall()}
    if meta.get("format") != FORMAT:
        raise StoreError(f"{path} holds fact-store format {meta.get('format')}; this tkgqa reads format {FORMAT}",
                         hint=_IMPORT_HINT)  # fmt: skip
    return meta


def insert_names(con: duckdb.DuckDBPyConnection, table: str, first_id: int, names: Sequence[str]) -> None:
    """Append ``names`` to ``entities`` or ``relations`` with ids from ``first_id``."""
    if names:
        view = {"id": np.arange(first_id, first_id + len(names), dtype=np.int32),
                "name": np.array(names, dtype=object)}  # fmt: skip
        con.register("_names", view)
        con.execute(f"INSERT INTO {table} SELECT id, name FROM _names")
        con.unregister("_names")


def insert_facts(con: duckdb.DuckDBPyConnection, columns: dict[str, np.ndarray]) -> None:
    """Append facts given as numpy columns ``row, line, head, rel, tail, day``."""
    con.register("_facts", columns)
    con.execute(f"INSERT INTO facts SELECT {', '.join(_FACT_COLS)} FROM _facts")
    con.unregister("_facts")


def finish(con: duckdb.DuckDBPyConnection, *, facts: int, digest: str) -> None:
    """Build the indexes and mark the store complete (one transaction), then checkpoint the file."""
    con.execute("BEGIN")
    for name, col in _INDEXES.items():
        con.execute(f"CREATE INDEX {name} ON facts ({col})")
    set_meta(con, {"state": "complete", "facts": facts, "digest": digest})
    con.execute("COMMIT")
    con.execute("CHECKPOINT")


def write_kg(kg: TemporalKG, path: str | Path) -> DuckDBStore:
    """Write an in-memory KG to a new store at ``path`` (same rows, ids, lines, source and digest)."""
    path = Path(path)
    if path.exists():
        raise StoreError(f"{path} already exists", hint="choose a new path or delete it")
    con = connect(path, read_only=False)
    try:
        create_schema(con, {"source": kg.source})
        con.execute("BEGIN")
        insert_names(con, "entities", 0, kg.entities.names)
        insert_names(con, "relations", 0, kg.relations.names)
        insert_facts(con, {"row": np.arange(len(kg), dtype=np.int64), "line": kg.line, "head": kg.head,
                           "rel": kg.rel, "tail": kg.tail, "day": kg.day})  # fmt: skip
        con.execute("COMMIT")
        finish(con, facts=len(kg), digest=kg.digest)
    finally:
        con.close()
    return DuckDBStore(path)


def _ints(ids: Sequence[int] | np.ndarray) -> str:
    """An SQL list of integers (ints only, so safe to inline; inlined lists let DuckDB use the indexes)."""
    values = [str(int(i)) for i in np.asarray(list(ids)).reshape(-1)]
    return ", ".join(values) if values else "NULL"  # x IN (NULL) holds for no row, as np.isin with []


class DuckDBStore(NameLookup):
    """A :class:`~tkgqa.store.FactStore` over a DuckDB file written by ``tkgqa import`` or :func:`write_kg`.

    Opened read-only by default, so several searches can share the file; an import holds it exclusively.
    """

    def __init__(self, path: str | Path, *, read_only: bool = True) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataNotFoundError(f"fact store {self.path} not found",
                                    hint="create it with: tkgqa import FACTS.tsv --store duckdb --db PATH")  # fmt: skip
        self.con = connect(self.path, read_only=read_only)
        try:
            meta = read_meta(self.con, self.path)
            if meta.get("state") != "complete":
                raise StoreError(f"{self.path}: the import of {meta.get('source')} has not finished "
                                 f"({meta.get('rows', 0):,} facts so far)",
                                 hint="run the same tkgqa import command again to resume it")  # fmt: skip
        except BaseException:
            self.con.close()
            raise
        self.source: str = meta["source"]
        self.digest: str = meta["digest"]
        self._n = int(meta["facts"])
        self.entities = NameIndex(self._names("entities"), kind="entity")
        self.relations = NameIndex(self._names("relations"), kind="relation")

    def _names(self, table: str) -> list[str]:
        return self.con.execute(f"SELECT name FROM {table} ORDER BY id").fetchnumpy()["name"].tolist()

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> DuckDBStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        lo, hi = self.con.execute("SELECT min(day), max(day) FROM facts").fetchone()
        span = (day_to_iso(lo), day_to_iso(hi)) if lo is not None else None
        return (f"DuckDBStore({self.path}: {len(self)} facts, {len(self.entities)} entities, "
                f"{len(self.relations)} relations, {span})")  # fmt: skip

    def select(
        self,
        *,
        start: int | None = None,
        end: int | None = None,
        relations: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        tails: Sequence[int] | None = None,
        entities: Sequence[int] | None = None,
    ) -> np.ndarray | None:
        """Rows (in no particular order) meeting every given constraint, as :meth:`mask`; None when none is given."""
        conds, params = [], []
        if start is not None:
            conds.append("day >= ?")
            params.append(int(start))
        if end is not None:
            conds.append("day <= ?")
            params.append(int(end))
        for ids, col in ((relations, "rel"), (heads, "head"), (tails, "tail")):
            if ids is not None:
                conds.append(f"{col} IN ({_ints(ids)})")
        if entities is not None:
            e = _ints(entities)
            conds.append(f"(head IN ({e}) OR tail IN ({e}))")
        if not conds:
            return None
        sql = f"SELECT row FROM facts WHERE {' AND '.join(conds)}"
        return self.con.execute(sql, params).fetchnumpy()["row"].astype(np.int64)

    def mask(self, **filters: Any) -> np.ndarray:
        """Rows within ``[start, end]`` (days, inclusive) with any of the given relations / heads / tails.

        ``entities`` matches either side. Every given constraint must hold (AND); None means no constraint.
        """
        rows = self.select(**filters)
        if rows is None:
            return np.ones(len(self), dtype=bool)
        m = np.zeros(len(self), dtype=bool)
        m[rows] = True
        return m

    def _gather(
        self, rows: np.ndarray | Sequence[int], cols: str
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(positions, columns)``: the columns ``cols`` of the facts at ``rows`` in ``rows``' order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        uniq, pos = np.unique(rows, return_inverse=True)
        if len(uniq) > len(self) // 8:  # a large share of the KG: one scan (in row order, see connect)
            return rows, self.con.execute(f"SELECT {cols} FROM facts").fetchnumpy()
        if len(uniq) <= _INLINE_ROWS:  # a few hits: index lookups
            sql = f"SELECT row, {cols} FROM facts WHERE row IN ({_ints(uniq)}) ORDER BY row"
            return pos, self.con.execute(sql).fetchnumpy()
        got = self.con.execute(f"SELECT row, {cols} FROM facts WHERE row IN (SELECT unnest(?)) ORDER BY row",
                               [uniq.tolist()]).fetchnumpy()  # fmt: skip
        return pos, got

    def facts(self, rows: np.ndarray | Sequence[int]) -> list[Fact]:
        """The facts at ``rows`` (in the given order)."""
        pos, got = self._gather(rows, "line, head, rel, tail, day")
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        names, rels = self.entities.names, self.relations.names
        line, head, rel, tail, day = (got[c][pos].tolist() for c in ("line", "head", "rel", "tail", "day"))
        return [Fact(row=int(r), line=ln, head=names[h], relation=rels[re_], tail=names[t], date=day_to_iso(d))
                for r, ln, h, re_, t, d in zip(rows.tolist(), line, head, rel, tail, day, strict=True)]  # fmt: skip

    def days(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Days since 1970-01-01 of the facts at ``rows``."""
        pos, got = self._gather(rows, "day")
        return got["day"][pos].astype(np.int32)

    def columns(self, rows: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """The id columns ``head, rel, tail, day, line`` of the facts at ``rows`` (in the given order)."""
        pos, got = self._gather(rows, "line, head, rel, tail, day")
        return {
            c: got[c][pos].astype(np.int64 if c == "line" else np.int32)
            for c in ("head", "rel", "tail", "day", "line")
        }

    def texts(self) -> list[str]:
        """One embedding text per fact, in row order (the whole KG: used once, to build the index)."""
        got = self.con.execute(
            "SELECT head, rel, tail, day FROM facts"
        ).fetchnumpy()  # row order, see connect
        return fact_texts(self.entities.names, self.relations.names, got["head"], got["rel"], got["tail"],
                          got["day"])  # fmt: skip
