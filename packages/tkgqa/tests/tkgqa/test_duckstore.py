"""The DuckDB store answers exactly as the numpy store; bad files (other format, locked, unfinished) fail in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tkgqa.duckstore import FORMAT, DuckDBStore, StoreError, write_kg
from tkgqa.search import SearchTool
from tkgqa.store import FactStore


@pytest.fixture(scope="module")
def stores(bench, tmp_path_factory):
    """The synthetic benchmark KG in numpy and the same facts written to DuckDB."""
    duck = write_kg(bench.store, tmp_path_factory.mktemp("duck") / "kg.duckdb")
    yield bench.store, duck
    duck.close()


def _ids(draw, n: int):
    return draw(st.none() | st.lists(st.integers(0, n - 1), max_size=4))


@st.composite
def filters(draw, kg):
    lo, hi = int(kg.day.min()), int(kg.day.max())
    f = {
        "start": draw(st.none() | st.integers(lo - 2, hi + 2)),
        "end": draw(st.none() | st.integers(lo - 2, hi + 2)),
        "relations": _ids(draw, len(kg.relations)),
        "heads": _ids(draw, len(kg.entities)),
        "tails": _ids(draw, len(kg.entities)),
        "entities": _ids(draw, len(kg.entities)),
    }
    f = {k: v for k, v in f.items() if draw(st.booleans())}
    note(f"filters={f}")
    return f


@given(data=st.data())
def test_duckdb_masks_and_rows_equal_the_numpy_store_over_random_filters(stores, data):
    kg, duck = stores
    f = data.draw(filters(kg))
    want = kg.mask(**f)
    assert duck.mask(**f).tolist() == want.tolist()
    rows = np.flatnonzero(want)
    order = data.draw(st.permutations(rows.tolist())) if len(rows) < 50 else rows[::-1]
    assert duck.facts(order) == kg.facts(order)
    assert duck.days(order).tolist() == kg.days(order).tolist()
    want_cols, got_cols = kg.columns(order), duck.columns(order)
    assert {c: v.tolist() for c, v in got_cols.items()} == {c: v.tolist() for c, v in want_cols.items()}


def test_duckdb_store_keeps_names_texts_and_identity(stores):
    kg, duck = stores
    assert isinstance(duck, FactStore)
    assert len(duck) == len(kg) and duck.digest == kg.digest and duck.source == kg.source
    assert duck.entities.names == kg.entities.names and duck.relations.names == kg.relations.names
    assert duck.texts() == kg.texts()
    every = np.arange(len(kg))
    assert duck.facts(every) == kg.facts(every) and duck.days(every).tolist() == kg.days(every).tolist()
    assert {c: v.tolist() for c, v in duck.columns(every).items()} == {
        c: v.tolist() for c, v in kg.columns(every).items()
    }


def test_search_tool_gives_the_same_hits_on_both_stores(stores, hash_index, bench):
    kg, duck = stores
    enc, idx = hash_index
    tools = [SearchTool(kg, idx, enc), SearchTool(duck, idx, enc)]
    calls = [
        {"query": "visit"},
        {"query": "talks", "sort": "time_asc", "start_date": "2014"},
        {"query": "x", "sort": "time_desc", "entity_filter_name": kg.entities.names[3], "top_k": 50},
        {"query": "y", "relation_filter": kg.relations.names[1], "entity_filter_name": kg.entities.names[5],
         "entity_filter_position": "back"},
    ]  # fmt: skip
    for call in calls:
        a, b = (t.search(**call) for t in tools)
        assert a == b and a, call


def test_a_store_of_another_format_is_refused_naming_it(stores, tmp_path):
    path = tmp_path / "old.duckdb"
    write_kg(stores[0], path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '0' WHERE key = 'format'")
    con.close()
    with pytest.raises(
        StoreError, match=f"holds fact-store format 0; this tkgqa reads format {FORMAT}"
    ) as err:
        DuckDBStore(path)
    assert "tkgqa import" in err.value.hint


def test_a_file_that_is_no_store_is_refused(tmp_path):
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    with pytest.raises(StoreError, match="not a tkgqa fact store"):
        DuckDBStore(other)
    junk = tmp_path / "junk.duckdb"
    junk.write_text("not a database\n" * 100)
    with pytest.raises(StoreError, match="is not a database this duckdb"):
        DuckDBStore(junk)


def test_a_locked_store_is_one_clear_error(stores, tmp_path):
    path = tmp_path / "kg.duckdb"
    write_kg(stores[0], path).close()
    holder = subprocess.Popen([sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
                               "print('held', flush=True); sys.stdin.read()", str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=rf"is locked by process {holder.pid} "):
            DuckDBStore(path)
    finally:
        holder.communicate("")


def _common(data_dir):
    return ["--data-dir", str(data_dir), "--encoder", "hash"]


@pytest.fixture
def db(data_dir, tmp_path):
    """The data dir's KG written to DuckDB (same digest, so it shares the numpy store's index)."""
    from tkgqa.loaders import load_multitq_kg

    write_kg(load_multitq_kg(data_dir), tmp_path / "kg.duckdb").close()
    return tmp_path / "kg.duckdb"


def test_eval_on_duckdb_scores_and_replays_exactly_as_numpy(data_dir, db, tmp_path):
    from effcore.testing.cli import cli_ok
    from tkgqa.cli import app

    runs = {}
    for name, store in (("numpy", []), ("duckdb", ["--store", "duckdb", "--db", str(db)])):
        out, log = tmp_path / f"{name}.json", tmp_path / f"{name}.jsonl"
        cli_ok(app, ["eval", *_common(data_dir), *store, "--log", str(log), "--out", str(out)])
        runs[name] = json.loads(out.read_text())
    assert runs["duckdb"]["table"] == runs["numpy"]["table"]
    assert runs["duckdb"]["meta"]["kg"]["digest"] == runs["numpy"]["meta"]["kg"]["digest"]
    replayed = tmp_path / "replay.json"
    cli_ok(app, ["replay", str(tmp_path / "numpy.jsonl"), *_common(data_dir), "--store", "duckdb", "--db", str(db),
                 "--out", str(replayed)])  # fmt: skip
    rows = json.loads(replayed.read_text())["rows"]
    assert sum(r["calls"] for r in rows) > 90 and all(r["differ"] == 0 for r in rows)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--db", "x.duckdb"], "--db applies to --store duckdb"),
        (["--store", "duckdb"], "--db is missing"),
        (["--store", "sqlite"], "--store 'sqlite' is not one of numpy, duckdb"),
        (["--store", "duckdb", "--db", "missing.duckdb"], "--db missing.duckdb does not exist"),
        (["--store", "duckdb", "--db", "DB", "--kg", "icews14"], "--kg does not apply to --store duckdb"),
        (["--store", "duckdb", "--db", "DB", "--slice", "dev"], "--slice does not apply to --store duckdb"),
    ],
)
def test_store_options_are_checked_before_loading(db, args, match):
    from effcore.testing.cli import cli_fails
    from tkgqa.cli import app

    args = [str(db) if a == "DB" else a for a in args]
    cli_fails(app, ["search", "visit", *args], match)
