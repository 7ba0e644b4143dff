"""An approximate vector index over the fact embeddings (FAISS HNSW): built in resumable chunks, searched with filters.

Why FAISS HNSW: HNSW needs no training pass (IVF does, over a sample, before the first fact can be added),
so it grows chunk by chunk and an interrupted build resumes from the facts already in the graph; and FAISS
applies a filter *during* the graph search (``IDSelectorBitmap``), which hnswlib does only through a Python
callback per candidate. Filters that leave few rows are scored exactly instead (no recall loss); time
sorts in the default mode need every matching row and always are.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tkgqa.index import FactIndex

__all__ = ["ANN_MIN_FACTS", "EXACT_BELOW", "AnnIndex", "load_or_build_ann"]

ANN_MIN_FACTS = 1_000_000
"""Below this many facts brute force is the default: one exact scan of MultiTQ's 227,892 MiniLM vectors
takes ~30 ms on one core, under the issue's 50 ms goal, and is exact."""
EXACT_BELOW = 20_000
"""A filter leaving at most this many rows is scored exactly: a few ms, and a filtered graph search over
so few rows would lose recall."""
CHUNK = 65_536  # vectors added between two saves: what an interrupted build loses at most


class AnnIndex:
    """A FAISS HNSW graph (inner product on unit vectors = cosine) over the rows of a :class:`FactIndex`."""

    def __init__(
        self, graph, *, path: Path | None = None, ef_search: int = 256, exact_below: int = EXACT_BELOW
    ):
        self.graph, self.path, self.ef_search, self.exact_below = graph, path, ef_search, exact_below

    def __len__(self) -> int:
        return int(self.graph.ntotal)

    def search(self, query: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
        """Up to ``k`` rows (among ``mask``'s, when given), most similar first; -1 padding removed."""
        import faiss

        q = np.asarray(query, np.float32).reshape(1, -1)
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.ef_search, k)
        bits = sel = None  # both must outlive the search call
        if mask is not None:
            bits = np.packbits(np.asarray(mask, bool), bitorder="little")
            sel = faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits))
            params.sel = sel
        _, ids = self.graph.search(q, k, params=params)
        return ids[0][ids[0] >= 0].astype(np.int64)


def _save(graph, path: Path) -> None:
    import faiss

    tmp = path.with_name(f".{path.name}.tmp")
    faiss.write_index(graph, str(tmp))
    os.replace(tmp, path)


def load_or_build_ann(
    index: FactIndex,
    *,
    m: int = 32,
    ef_construction: int = 80,
    chunk: int = CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> AnnIndex:
    """The HNSW graph of ``index``'s vectors, saved in its folder (built there when missing).

    The graph is saved every ``chunk`` vectors under ``<name>.partial``; a rerun continues from the
    vectors already in it. ``index`` must have a folder (a cached index from :func:`load_or_build_index`).
    """
    import faiss

    if index.path is None:
        raise ValueError(
            "the fact index has no folder to keep the graph in (build it with load_or_build_index)"
        )
    n, dim = index.vectors.shape
    path = index.path / f"hnsw-m{m}-ef{ef_construction}.faiss"
    if path.is_file():
        graph = faiss.read_index(str(path))
        if graph.ntotal == n and graph.d == dim:
            return AnnIndex(graph, path=path)
        path.unlink()
    partial = path.with_name(path.name + ".partial")
    graph = faiss.read_index(str(partial)) if partial.is_file() else None
    if graph is None or graph.d != dim or graph.ntotal > n:
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = ef_construction
    for lo in range(int(graph.ntotal), n, chunk):
        graph.add(np.asarray(index.vectors[lo : lo + chunk], dtype=np.float32))
        _save(graph, partial)
        if progress:
            progress(int(graph.ntotal), n)
    _save(graph, partial)
    os.replace(partial, path)
    return AnnIndex(graph, path=path)
