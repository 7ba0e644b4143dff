"""The approximate index: recall@10 against brute force above a floor, filters kept, builds that resume."""

from __future__ import annotations

import numpy as np
import pytest

from tkgqa.ann import load_or_build_ann
from tkgqa.index import FactIndex
from tkgqa.search import SearchTool

RECALL_FLOOR = 0.95  # measured 0.9975 (compat 1.0) here; MultiTQ's numbers are in the README


@pytest.fixture
def folder_index(hash_index, tmp_path):
    enc, idx = hash_index
    return enc, FactIndex(idx.vectors, encoder_name=enc.name, kg_digest=idx.kg_digest, path=tmp_path)


def _calls(kg, n=30):
    rng = np.random.default_rng(0)
    facts = kg.facts(rng.integers(0, len(kg), n))
    hub = kg.entities.names[int(np.bincount(kg.head).argmax())]
    out = []
    for i, f in enumerate(facts):
        q = f"{f.relation.replace('_', ' ')} {f.tail}"
        out += [{"query": q}, {"query": q, "start_date": f.date[:4]}, {"query": q, "entity_filter_name": hub},
                {"query": q, "top_k": 25 + i % 5}]  # fmt: skip
    return out


def _recall(bench, enc, idx, ann, **tool_kw):
    """Mean recall@k of the graph search against brute force; a hit tied with the k-th exact score counts."""
    exact, approx = (
        SearchTool(bench.store, idx, enc, **tool_kw),
        SearchTool(bench.store, idx, enc, ann=ann, **tool_kw),
    )
    scores = []
    for call in _calls(bench.store):
        want = exact.search(**call)
        got = approx.search(**call)
        q = exact.embed_query(call["query"])
        assert all(np.isclose(h.score, idx.scores(q, np.array([h.row]))[0], atol=1e-6) for h in got)
        floor = min((h.score for h in want), default=0.0) - 1e-6
        scores.append(sum(h.score >= floor for h in got[: len(want)]) / max(len(want), 1))
    return float(np.mean(scores))


def test_recall_at_10_of_the_graph_search_is_above_the_floor_with_and_without_filters(bench, folder_index):
    enc, idx = folder_index
    ann = load_or_build_ann(idx)
    ann.exact_below = 0  # force the graph search even for this small KG
    assert _recall(bench, enc, idx, ann) >= RECALL_FLOOR
    assert _recall(bench, enc, idx, ann, mode="compat") >= RECALL_FLOOR


def test_below_the_exact_threshold_the_hits_are_the_brute_force_ones(bench, folder_index):
    enc, idx = folder_index
    ann = load_or_build_ann(idx)  # exact_below 20,000 > 1,500 facts: every call is scored exactly
    assert _recall(bench, enc, idx, ann) == 1.0


def test_an_interrupted_build_resumes_from_the_saved_vectors(bench, folder_index):
    enc, idx = folder_index
    seen = []

    def stop(done, total):
        seen.append(done)
        if done == 500:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        load_or_build_ann(idx, chunk=500, progress=stop)
    assert list(idx.path.glob("*.partial"))
    ann = load_or_build_ann(idx, chunk=500, progress=lambda done, total: seen.append(done))
    assert seen == [500, 1000, 1500] and len(ann) == len(bench.store) and not list(idx.path.glob("*.partial"))
    assert load_or_build_ann(idx).path == ann.path  # reloaded, not rebuilt
    ann.exact_below = 0
    assert _recall(bench, enc, idx, ann) >= RECALL_FLOOR


def test_index_builds_the_graph_on_request_and_search_uses_it_with_the_same_hits(data_dir, tmp_path):
    import json

    from effcore.testing.cli import cli_fails, cli_ok
    from tkgqa.cli import app

    common = ["--data-dir", str(data_dir), "--encoder", "hash"]
    cli_ok(app, ["index", *common, "--ann", "on", "--out", str(tmp_path / "i.json")])
    assert json.loads((tmp_path / "i.json").read_text())["ann"].endswith(".faiss")
    outs = []
    for ann in ("on", "off"):
        out = tmp_path / f"s-{ann}.json"
        cli_ok(app, ["search", "praise", "-e", "china", *common, "--ann", ann, "--out", str(out)])
        outs.append(json.loads(out.read_text()))
    assert outs[0] == outs[1] and outs[0]
    cli_fails(
        app, ["search", "praise", *common, "--ann", "maybe"], "--ann 'maybe' is not one of auto, on, off"
    )
