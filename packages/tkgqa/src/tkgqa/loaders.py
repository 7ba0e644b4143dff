"""KG loaders: MultiTQ's kg_partial, ICEWS14 (ids to names, hours to 2014 days) and a user's own TSV."""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from effcore.assets import data_file
from effcore.errors import DataNotFoundError
from effcore.io import sha256_file
from tkgqa.store import TemporalKG
from tkgqa.tsv import TsvLayout, TsvReader

__all__ = [
    "ICEWS14_TAR",
    "MULTITQ_KG",
    "load_icews14",
    "load_kg",
    "load_multitq_kg",
    "load_tsv",
]

MULTITQ_KG = "multitq/kg_partial.tsv.gz"
ICEWS14_TAR = "icews14/icews14.tar.gz"
_ICEWS14_EPOCH = int(np.datetime64("2014-01-01", "D").astype(np.int64))


def load_tsv(path: str | Path) -> TemporalKG:
    """A TSV of facts: ``head, relation, tail, date`` (``YYYY-MM-DD``), optionally ``line`` first.

    A header row is recognised when it names the columns (``head``, ``relation``, ``tail``, ``date``,
    optional ``line``; extra columns are ignored). Fields are split on tabs only, so CSV-quoted
    names and strings such as ``NA`` stay as written. Errors name the file and the line.
    """
    layout = TsvLayout()
    quads: list[tuple[str, str, str, str]] = []
    lines: list[int] = []
    with TsvReader(path) as reader:
        for no, text in reader.lines():
            if (quad := layout.parse(reader.path, no, text.rstrip("\r\n"))) is not None:
                quads.append(quad[:4])
                lines.append(quad[4])
    if not quads:
        raise DataNotFoundError(
            f"KG file {path} holds no facts", hint="one fact per line: head, relation, tail, date"
        )
    line_arr = lines if layout.line_col is not None else None
    return TemporalKG.from_quads(quads, lines=line_arr, source=str(path), digest=sha256_file(path))


def load_multitq_kg(data_dir: str | Path | None = None, *, relative: str = MULTITQ_KG) -> TemporalKG:
    """MultiTQ's partial KG (227,892 facts, full.txt line numbers kept) from the data directory."""
    return load_tsv(data_file(relative, root=data_dir))


def _icews_members(tar: tarfile.TarFile) -> dict[str, bytes]:
    out = {}
    for m in tar.getmembers():
        if m.isfile() and (fh := tar.extractfile(m)) is not None:
            out[m.name.rsplit("/", 1)[-1]] = fh.read()
    return out


def _id_map(blob: bytes, what: str) -> dict[int, str]:
    out = {}
    for no, line in enumerate(blob.decode("utf-8").splitlines(), start=1):
        if line.strip():
            name, _, idx = line.rstrip("\r").rpartition("\t")
            if not name or not idx.strip().isdigit():
                raise DataNotFoundError(f"{what}:{no}: expected 'name<TAB>id'", hint="check the archive")
            out[int(idx)] = name
    return out


def load_icews14(
    data_dir: str | Path | None = None, *, splits: Iterable[str] = ("train", "valid", "test")
) -> TemporalKG:
    """ICEWS14 from its tar: ids mapped to names, ``time/24`` days after 2014-01-01; CRLF handled.

    Line numbers count facts across the chosen splits in order (1-based).
    """
    path = data_file(ICEWS14_TAR, root=data_dir)
    with tarfile.open(path) as tar:
        files = _icews_members(tar)
    ents = _id_map(files["entity2id.txt"], "entity2id.txt")
    rels = _id_map(files["relation2id.txt"], "relation2id.txt")
    cols: list[np.ndarray] = []
    for split in splits:
        name = f"{split}.txt"
        if name not in files:
            raise DataNotFoundError(f"{path} has no {name}", hint="splits are train, valid, test")
        rows = [ln.split("\t") for ln in files[name].decode("utf-8").splitlines() if ln.strip()]
        cols.append(np.array([[int(x) for x in r[:4]] for r in rows], dtype=np.int64))
    quads = np.concatenate(cols)
    ent_names = [ents[i] for i in range(max(ents) + 1)]
    rel_names = [rels[i] for i in range(max(rels) + 1)]
    return TemporalKG(
        entities=ent_names, relations=rel_names, head=quads[:, 0], rel=quads[:, 1], tail=quads[:, 2],
        day=_ICEWS14_EPOCH + quads[:, 3] // 24, source=str(path), digest=sha256_file(path),
    )  # fmt: skip


def load_kg(spec: str | Path, data_dir: str | Path | None = None) -> TemporalKG:
    """``multitq``, ``icews14`` or a path to a TSV (see :func:`load_tsv`)."""
    if str(spec) == "multitq":
        return load_multitq_kg(data_dir)
    if str(spec) == "icews14":
        return load_icews14(data_dir)
    return load_tsv(spec)
