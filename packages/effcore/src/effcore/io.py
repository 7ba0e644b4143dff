"""Small file helpers every effml writer shares: atomic writes, row tables, SHA-256."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError

__all__ = ["atomic_path", "atomic_write_text", "check_writable", "sha256_file", "write_json", "write_rows"]

_BLOCK = 8 * 2**20


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: readers never see half a file.

    The temporary file is unique (two writers of one path never share it), flushed to disk before the
    rename, and removed when the write fails, so an interrupted or failed write leaves the old file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (``torch.save``,
    ``savefig``): when the block ends normally the file is flushed to disk and renamed onto ``path``;
    when it raises, the temporary file is removed and ``path`` keeps its old content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb+") as fh:
            os.fsync(fh.fileno())
        tmp.chmod(0o644)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path: str | Path, *, suffixes: Sequence[str] | None = None, flag: str = "--out") -> Path:
    """Check, before any work, that ``path`` can be written: its extension is one of ``suffixes``
    (lower case, with the dot; None accepts any), it is not a directory, and its nearest existing
    folder is a folder in which a file can be created (a probe file is made there and removed).

    Raises :class:`ConfigError` naming ``flag`` and the fix; returns ``path``. Folders that do not
    exist yet are not created here (the writers create them).
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise ConfigError(
            f"{flag} {path}: unsupported extension {path.suffix or '(none)'!r}",
            hint=f"use {' or '.join(suffixes)}",
        )
    if path.is_dir():
        raise ConfigError(f"{flag} {path} is a directory", hint="give a file name inside it")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path}: {parent} is a file, not a folder", hint="choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".effml-probe-")
    except OSError as err:
        raise ConfigError(
            f"{flag} {path}: cannot create files in {parent} ({err.strerror or err})",
            hint="choose a writable folder",
        ) from None
    os.close(fd)
    os.unlink(probe)
    return path


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (non-JSON values via ``str``)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def write_rows(path: str | Path, rows: Iterable[Mapping[str, Any]], *, payload: Any = None) -> Path:
    """Write dict rows as CSV or JSON by the suffix of ``path`` (JSON writes ``payload`` when given)."""
    path = Path(path)
    rows = [dict(row) for row in rows]
    suffix = path.suffix.lower()
    if suffix == ".json":
        return write_json(path, rows if payload is None else payload)
    if suffix != ".csv":
        raise ConfigError(
            f"cannot write rows to {path.name!r}: unsupported extension", hint="use .json or .csv"
        )
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def sha256_file(path: str | Path, progress: Callable[[int, int], None] | None = None) -> str:
    """SHA-256 of a file read in 8 MiB blocks; ``progress(done_bytes, total_bytes)`` after each block."""
    path = Path(path)
    digest = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()
