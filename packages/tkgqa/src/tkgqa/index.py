"""The fact index: unit-norm fact embeddings, cached on disk, verified, built in resumable chunks."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from filelock import FileLock

from effcore.assets import cache_root
from effcore.errors import AssetError
from effcore.io import sha256_file, write_json
from tkgqa.embed import Encoder, Progress

__all__ = ["CHUNK_FACTS", "FactIndex", "cached_index", "index_dir", "load_or_build_index"]

log = logging.getLogger(__name__)

_FORMAT = 1  # bump when the fact text or the final file layout changes
CHUNK_FACTS = 8192
"""Facts per build chunk: ~30 s of MiniLM on one CPU thread, the most an interrupted build loses."""


class FactIndex:
    """Unit-norm fact embeddings (float16 on disk and in memory) with cosine scores on demand."""

    def __init__(self, vectors: np.ndarray, *, encoder_name: str, kg_digest: str, path: Path | None = None):
        self.vectors = vectors
        self._full: np.ndarray | None = None
        self.encoder_name = encoder_name
        self.kg_digest = kg_digest
        self.path = path

    def __len__(self) -> int:
        return len(self.vectors)

    def scores(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Cosine of ``query`` (unit norm) with every fact, or with ``rows`` only (computed in fp32)."""
        q = np.asarray(query, np.float32).reshape(-1)
        if rows is None or len(rows) > len(self) // 8:
            full = self._fp32()
            if full is not None:
                return full @ q if rows is None else full[rows] @ q
        block = self.vectors if rows is None else self.vectors[rows]
        out = np.empty(len(block), np.float32)
        for s in range(0, len(block), 65536):  # bounded fp32 temporaries on the 228k-row MultiTQ index
            out[s : s + 65536] = block[s : s + 65536].astype(np.float32) @ q
        return out

    def _fp32(self) -> np.ndarray | None:
        # Unfiltered calls scan every row: converting fp16 each time costs ~200 ms on MultiTQ, so keep
        # one fp32 copy (350 MB there) when it stays under 1 GiB; larger indexes convert per block.
        if self._full is None and self.vectors.size * 4 <= 2**30:
            self._full = np.asarray(self.vectors, dtype=np.float32)
        return self._full


def index_dir(kg_digest: str, encoder_name: str) -> Path:
    """``<cache>/tkgqa/index/<sha256(kg digest + encoder + format)[:24]>``."""
    key = hashlib.sha256(f"{kg_digest}|{encoder_name}|v{_FORMAT}".encode()).hexdigest()[:24]
    return cache_root() / "tkgqa" / "index" / key


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _verify(folder: Path, n: int) -> str | None:
    meta = _read_json(folder / "manifest.json")
    vec = folder / "embeddings.npy"
    if meta is None or not vec.is_file():
        return "incomplete or unreadable"
    if meta.get("facts") != n:
        return f"built for {meta.get('facts')} facts, the KG has {n}"
    if vec.stat().st_size != meta.get("bytes"):
        return f"embeddings.npy is {vec.stat().st_size} bytes, expected {meta.get('bytes')} (truncated?)"
    if sha256_file(vec) != meta.get("sha256"):
        return "checksum mismatch"
    return None


def cached_index(store, encoder_name: str) -> Path | None:
    """The folder of a complete, verified index of ``store`` for ``encoder_name``, or None."""
    folder = index_dir(store.digest, encoder_name)
    return folder if folder.is_dir() and _verify(folder, len(store)) is None else None


def _save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` through a temporary file and a rename: a file under ``path`` is always complete."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _chunk_ok(part: Path, k: int, record: dict | None) -> bool:
    f = part / f"chunk-{k:05d}.npy"
    return (
        bool(record)
        and f.is_file()
        and f.stat().st_size == record["bytes"]
        and sha256_file(f) == record["sha256"]
    )


def _build(store, encoder: Encoder, folder: Path, *, chunk_facts: int, batch_size: int,
           progress: Progress | None) -> None:  # fmt: skip
    """Embed in chunks under ``<folder>.partial`` (kept when interrupted), then assemble ``folder``.

    ``build.json`` records the build's parameters and each finished chunk's size and SHA-256; a
    rerun with the same parameters keeps every chunk that verifies and embeds only the rest.
    """
    n = len(store)
    plan = {"facts": n, "encoder": encoder.name, "kg_digest": store.digest, "chunk_facts": chunk_facts,
            "format": _FORMAT}  # fmt: skip
    part = folder.with_name(folder.name + ".partial")
    state = _read_json(part / "build.json")
    if state is None or state.get("plan") != plan:
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        state = {"plan": plan, "chunks": {}}
        write_json(part / "build.json", state)
    t0 = time.perf_counter()
    texts = store.texts()
    bounds = [(lo, min(lo + chunk_facts, n)) for lo in range(0, n, chunk_facts)]
    kept = [k for k in range(len(bounds)) if _chunk_ok(part, k, state["chunks"].get(str(k)))]
    if kept:
        log.warning("resuming the index build in %s: %d of %d chunks kept", part, len(kept), len(bounds))
    done = sum(bounds[k][1] - bounds[k][0] for k in kept)
    if progress:
        progress(done, n)
    for k, (lo, hi) in enumerate(bounds):
        if k in kept:
            continue
        base = done
        report = (lambda d, _t, base=base: progress(base + d, n)) if progress else None
        vecs = encoder.encode(texts[lo:hi], batch_size=batch_size, progress=report).astype(np.float16)
        f = part / f"chunk-{k:05d}.npy"
        _save_npy(f, vecs)
        state["chunks"][str(k)] = {"rows": hi - lo, "bytes": f.stat().st_size, "sha256": sha256_file(f)}
        write_json(part / "build.json", state)
        done += hi - lo
    vecs = np.concatenate([np.load(part / f"chunk-{k:05d}.npy") for k in range(len(bounds))])
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _save_npy(tmp / "embeddings.npy", vecs)
    write_json(tmp / "manifest.json", {
        "facts": n, "dim": int(vecs.shape[1]), "encoder": encoder.name, "kg_digest": store.digest,
        "kg_source": store.source, "bytes": (tmp / "embeddings.npy").stat().st_size,
        "sha256": sha256_file(tmp / "embeddings.npy"), "chunks": len(bounds), "resumed_chunks": len(kept),
        "build_seconds": round(time.perf_counter() - t0, 1), "format": _FORMAT,
    })  # fmt: skip
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    shutil.rmtree(part, ignore_errors=True)


def load_or_build_index(
    store,
    encoder: Encoder,
    *,
    rebuild: bool = False,
    batch_size: int = 256,
    chunk_facts: int | None = None,
    progress: Progress | None = None,
) -> FactIndex:
    """The cached index of ``store`` for ``encoder``: verified (size + SHA-256), else built.

    The key is the KG's digest plus the encoder name, so a changed KG or model never reuses stale
    vectors. A truncated or corrupt cache is detected and rebuilt (logged). The build writes
    ``chunk_facts`` facts at a time, each chunk atomically, so an interrupted build resumes where it
    stopped (``chunk_facts``: :data:`CHUNK_FACTS` when None); ``rebuild`` deletes the index and any finished chunks first.
    """
    if not store.digest:
        raise AssetError(
            "this KG has no file digest, so its index cannot be cached", hint="load it from a file"
        )
    chunk_facts = CHUNK_FACTS if chunk_facts is None else chunk_facts
    if chunk_facts < 1:
        raise ValueError(f"chunk_facts must be >= 1, got {chunk_facts}")
    folder = index_dir(store.digest, encoder.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if rebuild:  # from zero; an interrupted rebuild then resumes like any build
            shutil.rmtree(folder, ignore_errors=True)
            shutil.rmtree(folder.with_name(folder.name + ".partial"), ignore_errors=True)
        reason = _verify(folder, len(store)) if folder.exists() else None
        if folder.exists() and reason is None:
            vecs = np.load(folder / "embeddings.npy", mmap_mode="r")
            return FactIndex(vecs, encoder_name=encoder.name, kg_digest=store.digest, path=folder)
        if folder.exists():
            log.warning("index at %s is unusable (%s): rebuilding", folder, reason)
        _build(store, encoder, folder, chunk_facts=chunk_facts, batch_size=batch_size, progress=progress)
    return FactIndex(np.load(folder / "embeddings.npy", mmap_mode="r"), encoder_name=encoder.name,
                     kg_digest=store.digest, path=folder)  # fmt: skip
