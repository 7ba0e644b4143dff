"""Streaming a fact TSV into a DuckDB store in chunks: bounded memory, resumable after a bad line or a stop.

Each chunk of facts, with the names it introduces and the import's position (the next line, the
SHA-256 of every line before it, the header layout), is committed in one transaction. A bad line
commits the facts before it and raises an error naming the line; the same command after the fix
checks that the lines before it are unchanged and continues from there. Only the name vocabularies
(and one chunk) are held in memory, never the facts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from effcore.errors import DataNotFoundError
from effcore.io import sha256_file
from tkgqa.duckstore import (
    StoreError,
    connect,
    create_schema,
    finish,
    insert_facts,
    insert_names,
    read_meta,
    set_meta,
)
from tkgqa.store import iso_to_day
from tkgqa.tsv import TsvLayout, TsvReader

__all__ = ["CHUNK_ROWS", "ImportReport", "import_tsv"]

CHUNK_ROWS = 200_000
"""Facts per transaction: ~10 MB of buffers, a few seconds of work, the most a hard stop loses."""

Progress = Callable[[int, int], None]


@dataclass(kw_only=True, slots=True)
class ImportReport:
    """What an import did: the store's totals and where this run started."""

    db: Path
    source: str
    facts: int
    entities: int
    relations: int
    lines: int
    resumed_at_line: int  # 1 for a fresh import
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"db": str(self.db), "source": self.source, "facts": self.facts, "entities": self.entities,
                "relations": self.relations, "lines": self.lines, "resumed_at_line": self.resumed_at_line,
                "db_bytes": self.db.stat().st_size, "seconds": self.seconds}  # fmt: skip


class _Vocab:
    """Names to ids in first-seen order (as :meth:`TemporalKG.from_quads`), with the ones not yet stored."""

    def __init__(self, names: list[str]) -> None:
        self.ids = {n: i for i, n in enumerate(names)}
        self.new: list[str] = []

    def id(self, name: str) -> int:
        i = self.ids.get(name)
        if i is None:
            i = self.ids[name] = len(self.ids)
            self.new.append(name)
        return i


class _Importer:
    """One run of :func:`import_tsv` over an open connection: buffers a chunk, commits it with its position."""

    def __init__(self, con: duckdb.DuckDBPyConnection, meta: dict[str, Any], chunk_rows: int) -> None:
        self.con, self.chunk_rows = con, chunk_rows
        self.rows, self.next_line = int(meta["rows"]), int(meta["next_line"])
        self.layout = TsvLayout.from_json(meta["layout"])
        self.ents = _Vocab(self._names("entities"))
        self.rels = _Vocab(self._names("relations"))
        self.buf: list[tuple[int, int, int, int, int]] = []

    def _names(self, table: str) -> list[str]:
        return self.con.execute(f"SELECT name FROM {table} ORDER BY id").fetchnumpy()["name"].tolist()

    def add(self, quad: tuple[str, str, str, str, int | None]) -> None:
        h, r, t, d, line = quad
        row = self.rows + len(self.buf)
        self.buf.append((row + 1 if line is None else line, self.ents.id(h), self.rels.id(r), self.ents.id(t),
                         iso_to_day(d)))  # fmt: skip

    def commit(self, next_line: int, prefix_sha256: str) -> None:
        """Store the buffered facts, their new names and the position ``next_line`` in one transaction."""
        cols = np.array(self.buf, dtype=np.int64).reshape(-1, 5)
        self.con.execute("BEGIN")
        insert_names(self.con, "entities", len(self.ents.ids) - len(self.ents.new), self.ents.new)
        insert_names(self.con, "relations", len(self.rels.ids) - len(self.rels.new), self.rels.new)
        if len(cols):
            insert_facts(self.con, {"row": np.arange(self.rows, self.rows + len(cols), dtype=np.int64),
                                    "line": cols[:, 0], "head": cols[:, 1].astype(np.int32),
                                    "rel": cols[:, 2].astype(np.int32), "tail": cols[:, 3].astype(np.int32),
                                    "day": cols[:, 4].astype(np.int32)})  # fmt: skip
        self.rows += len(cols)
        self.next_line = next_line
        set_meta(self.con, {"rows": self.rows, "next_line": next_line, "prefix_sha256": prefix_sha256,
                            "layout": self.layout.to_json()})  # fmt: skip
        self.con.execute("COMMIT")
        self.buf.clear()
        self.ents.new.clear()
        self.rels.new.clear()


def _open(tsv: Path, db: Path, restart: bool) -> tuple[duckdb.DuckDBPyConnection, dict[str, Any]]:
    """A write connection to ``db`` and its meta: a new store, or an unfinished import of ``tsv`` to resume."""
    if restart:
        for f in (db, db.with_name(db.name + ".wal")):
            f.unlink(missing_ok=True)
    fresh = not db.exists()
    con = connect(db, read_only=False)
    try:
        if fresh:
            create_schema(con, {"source": str(tsv), "rows": 0, "next_line": 1,
                                "prefix_sha256": hashlib.sha256().hexdigest(), "layout": TsvLayout().to_json()})  # fmt: skip
        meta = read_meta(con, db)
        if meta["state"] == "complete":
            raise StoreError(f"{db} already holds a finished import of {meta['source']} ({meta['facts']:,} facts)",
                             hint="choose a new --db, or add --restart to import into it from scratch")  # fmt: skip
        if Path(meta["source"]).name != tsv.name:
            raise StoreError(f"{db} holds an unfinished import of {meta['source']}, not {tsv}",
                             hint=f"resume it with {meta['source']}, or add --restart to import {tsv} from scratch")  # fmt: skip
    except BaseException:
        con.close()
        if fresh:
            db.unlink(missing_ok=True)
        raise
    return con, meta


def import_tsv(
    tsv: str | Path,
    db: str | Path,
    *,
    chunk_rows: int = CHUNK_ROWS,
    restart: bool = False,
    progress: Progress | None = None,
) -> ImportReport:
    """Stream the facts of ``tsv`` (read like :func:`tkgqa.loaders.load_tsv`) into the store ``db``.

    Resumes an unfinished import of the same file (by name; the lines before the resume point must be
    byte-identical), refuses a finished one; ``restart`` deletes ``db`` first. ``progress(bytes read,
    file size)`` is called after every chunk. On success the store is indexed and its digest is the
    file's SHA-256, as the numpy store's, so both share one fact index.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    tsv, db = Path(tsv), Path(db)
    t0 = time.perf_counter()
    with TsvReader(tsv) as reader:
        con, meta = _open(tsv, db, restart)
        try:
            imp = _Importer(con, meta, chunk_rows)
            resumed_at = imp.next_line
            _stream(imp, reader, str(meta["prefix_sha256"]), progress)
            if imp.rows:
                finish(con, facts=imp.rows, digest=sha256_file(tsv))
        finally:
            con.close()
        lines = reader.line_no
    if imp.rows == 0:  # nothing to keep: leave no store behind
        db.unlink(missing_ok=True)
        raise DataNotFoundError(
            f"KG file {tsv} holds no facts", hint="one fact per line: head, relation, tail, date"
        )
    return ImportReport(db=db, source=str(tsv), facts=imp.rows, entities=len(imp.ents.ids),
                        relations=len(imp.rels.ids), lines=lines, resumed_at_line=resumed_at,
                        seconds=round(time.perf_counter() - t0, 1))  # fmt: skip


def _stream(imp: _Importer, reader: TsvReader, prefix: str, progress: Progress | None) -> None:
    """Skip (and hash) the lines already imported, then parse and commit the rest chunk by chunk."""
    hasher = hashlib.sha256()
    start = imp.next_line

    def check_prefix() -> None:
        if hasher.hexdigest() != prefix:
            raise StoreError(f"{reader.path} differs from the file imported so far in its first {start - 1:,} lines",
                             hint="restore those lines, or add --restart to import the file from scratch")  # fmt: skip

    checked = start == 1
    no = 0
    for no, text in reader.lines():
        if no < start:
            hasher.update(text.encode("utf-8"))
            continue
        if not checked:
            check_prefix()
            checked = True
        try:
            quad = imp.layout.parse(reader.path, no, text.rstrip("\r\n"))
        except DataNotFoundError as err:
            imp.commit(no, hasher.hexdigest())
            raise DataNotFoundError(err.message, hint=f"{err.hint}; then run the same command again: it keeps the "
                                    f"{imp.rows:,} facts before line {no:,} and resumes there") from None  # fmt: skip
        hasher.update(text.encode("utf-8"))
        if quad is not None:
            imp.add(quad)
            if len(imp.buf) >= imp.chunk_rows:
                imp.commit(no + 1, hasher.hexdigest())
                if progress:
                    progress(reader.position, reader.size)
    if not checked:
        check_prefix()
    imp.commit(no + 1 if no >= start else start, hasher.hexdigest())
    if progress:
        progress(reader.size, reader.size)
