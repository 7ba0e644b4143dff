"""tkgqa's DuckDB store on real MultiTQ: the CI slice's dev questions get identical hits from both stores.

The slice (the 40,000 facts about the entities of the 117 seeded dev questions of `--slice dev`) is
written to a DuckDB file; the planner then runs every question of the slice through the search tool
over each store, with one shared index. The index is the model-free hash encoder's: what is compared
is the stores (filters, row order, fact rows), not the encoder, and its many tied scores make any
difference in row order show; MiniLM would spend the test's time encoding queries.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from effcore.assets import data_dir
from effcore.errors import DataNotFoundError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def slice_stores(tmp_path_factory):
    """(the CI slice with its hash index, the same facts in DuckDB)."""
    from tkgqa.duckstore import write_kg
    from tkgqa.embed import HashEncoder
    from tkgqa.index import FactIndex
    from tkgqa.slices import CI_SLICE, load_slice

    try:
        root = data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    kg_slice = load_slice(CI_SLICE, root)
    enc = HashEncoder()
    index = FactIndex(enc.encode(kg_slice.store.texts()).astype("float16"), encoder_name=enc.name,
                      kg_digest=kg_slice.store.digest)  # fmt: skip
    duck = write_kg(kg_slice.store, tmp_path_factory.mktemp("duck") / "slice.duckdb")
    yield kg_slice, enc, index, duck
    duck.close()


def test_planner_gets_identical_hits_from_numpy_and_duckdb_on_the_ci_slice(slice_stores):
    from tkgqa.evaluate import evaluate
    from tkgqa.planner import Planner
    from tkgqa.policies import PlannerPolicy
    from tkgqa.relations import RelationScorer
    from tkgqa.search import SearchTool

    kg_slice, enc, index, duck = slice_stores
    questions, kg = kg_slice.questions, kg_slice.store
    planner = Planner(kg.entities.names, RelationScorer(kg.relations.names, enc))
    reports = [evaluate(questions, lambda: PlannerPolicy(planner), SearchTool(store, index, enc))
               for store in (kg, duck)]  # fmt: skip
    observations = [
        [[m["content"] for m in res.messages if m["role"] == "tool"] for res in report.results]
        for report in reports
    ]
    assert len(questions) > 100 and sum(map(len, observations[0])) > len(questions)
    assert observations[0] == observations[1]
    assert reports[0].table == reports[1].table


@settings(max_examples=60)
@given(data=st.data())
def test_duckdb_masks_equal_numpy_over_random_filters_on_the_real_slice(slice_stores, data):
    kg_slice, _, _, duck = slice_stores
    kg = kg_slice.store
    lo, hi = int(kg.day.min()), int(kg.day.max())
    seen_ents = np.unique(np.concatenate([kg.head, kg.tail]))
    ids = st.lists(st.sampled_from(seen_ents.tolist()), min_size=1, max_size=3)
    f = {"start": data.draw(st.integers(lo, hi)), "end": data.draw(st.integers(lo, hi)),
         "relations": data.draw(st.lists(st.integers(0, len(kg.relations) - 1), min_size=1, max_size=3)),
         "heads": data.draw(ids), "tails": data.draw(ids), "entities": data.draw(ids)}  # fmt: skip
    f = {k: v for k, v in f.items() if data.draw(st.booleans(), label=k)}
    note(f"filters={f}")
    want = kg.mask(**f)
    assert np.array_equal(duck.mask(**f), want)
    rows = np.flatnonzero(want)[:200]
    assert duck.facts(rows) == kg.facts(rows)


def test_import_of_multitq_gives_the_loader_s_kg_and_shares_its_index(tmp_path):
    from tkgqa.duckstore import DuckDBStore
    from tkgqa.importer import import_tsv
    from tkgqa.index import index_dir
    from tkgqa.loaders import MULTITQ_KG, load_multitq_kg

    try:
        root = data_dir()
    except DataNotFoundError as err:
        pytest.skip(str(err))
    kg = load_multitq_kg(root)
    report = import_tsv(root / MULTITQ_KG, tmp_path / "multitq.duckdb")
    assert report.facts == len(kg) == 227_892
    with DuckDBStore(tmp_path / "multitq.duckdb") as duck:
        assert duck.digest == kg.digest and index_dir(duck.digest, "x") == index_dir(kg.digest, "x")
        assert duck.entities.names == kg.entities.names and duck.relations.names == kg.relations.names
        rows = np.random.default_rng(0).choice(len(kg), 5_000, replace=False)
        assert duck.facts(rows) == kg.facts(rows)
        assert np.array_equal(duck.days(np.arange(len(kg))), kg.day)
