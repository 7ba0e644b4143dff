"""A user's fact TSV, line by line: the header, the field checks and errors that name the line.

One parser serves the in-memory loader (:func:`tkgqa.loaders.load_tsv`) and the streaming import into
the DuckDB store (:mod:`tkgqa.importer`), so both read a file identically.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from effcore.errors import DataNotFoundError
from tkgqa.store import iso_to_day

__all__ = ["Quad", "TsvLayout", "TsvReader"]

_COLUMNS = ("head", "relation", "tail", "date")

Quad = tuple[str, str, str, str, int | None]
"""``(head, relation, tail, YYYY-MM-DD, line)``; ``line`` from a ``line`` column (-1 when not a number), else None."""


@dataclass(kw_only=True, slots=True)
class TsvLayout:
    """Where the fields are: set by a header row naming the columns, fixed once the first fact is read."""

    cols: dict[str, int] = field(default_factory=lambda: {k: i for i, k in enumerate(_COLUMNS)})
    line_col: int | None = None
    seen_fact: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"cols": self.cols, "line_col": self.line_col, "seen_fact": self.seen_fact}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TsvLayout:
        return cls(cols=dict(value["cols"]), line_col=value["line_col"], seen_fact=bool(value["seen_fact"]))

    def parse(self, path: Path, no: int, text: str) -> Quad | None:
        """The fact on line ``no`` (its text without the newline); None for a blank or a header line.

        A header names ``head``, ``relation``, ``tail``, ``date`` (optional ``line``; extra columns are
        ignored) before the first fact. Fields are split on tabs only (no CSV unquoting).
        """
        if not text.strip():
            return None
        parts = text.split("\t")
        if not self.seen_fact and set(_COLUMNS) <= {p.strip().lower() for p in parts}:
            names = [p.strip().lower() for p in parts]
            self.cols = {k: names.index(k) for k in _COLUMNS}
            self.line_col = names.index("line") if "line" in names else None
            return None
        width = max(self.cols.values()) + 1
        if len(parts) < width:
            raise DataNotFoundError(
                f"{path}:{no}: expected {width} tab-separated fields (head, relation, tail, date), got {len(parts)}",
                hint="separate the fields with tabs",
            )
        h, r, t, d = (parts[self.cols[k]].strip() for k in _COLUMNS)
        if not (h and r and t):
            raise DataNotFoundError(f"{path}:{no}: empty head, relation or tail", hint="fill every field")
        try:
            iso_to_day(d)
        except ValueError:
            raise DataNotFoundError(
                f"{path}:{no}: date {d!r} is not YYYY-MM-DD", hint="write dates as ISO days, e.g. 2014-03-01"
            ) from None
        line = None
        if self.line_col is not None:
            value = parts[self.line_col].strip() if self.line_col < len(parts) else ""
            line = int(value) if value.isdigit() else -1
        self.seen_fact = True
        return h, r, t, d, line


class TsvReader:
    """The lines of a TSV (``.gz`` detected by its magic bytes) with their numbers and the bytes read.

    ``position`` is how far into the file on disk (compressed bytes for gzip) reading has got, for a
    progress bar against ``size``. Lines keep their text untranslated (CRLF is stripped per line).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DataNotFoundError(f"KG file {self.path} not found", hint="pass an existing .tsv or .tsv.gz")
        self.size = self.path.stat().st_size
        self._raw = self.path.open("rb")
        gz = self._raw.read(2) == b"\x1f\x8b"
        self._raw.seek(0)
        binary = gzip.GzipFile(fileobj=self._raw, mode="rb") if gz else self._raw
        # newline="" keeps CRLF visible to the parser, which strips it per line (ICEWS-style files).
        self._text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        self.line_no = 0

    @property
    def position(self) -> int:
        return self._raw.tell()

    def lines(self) -> Iterator[tuple[int, str]]:
        """``(line number, line)`` with the newline kept; a decoding error names the file and the line."""
        try:
            for line in self._text:
                self.line_no += 1
                yield self.line_no, line
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as err:
            raise DataNotFoundError(
                f"{self.path} is not a readable UTF-8 TSV after line {self.line_no}: {err}",
                hint="check the file",
            ) from None

    def close(self) -> None:
        self._text.close()
        self._raw.close()

    def __enter__(self) -> TsvReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
