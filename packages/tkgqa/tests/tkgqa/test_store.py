"""The numpy store: masks equal a brute-force filter, dates round-trip, neighbourhoods are the touching facts."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, note
from hypothesis import strategies as st

from tkgqa.store import FactStore, TemporalKG, day_to_iso, iso_to_day


@st.composite
def small_kgs(draw):
    n_ent, n_rel, n = draw(st.integers(2, 6)), draw(st.integers(1, 3)), draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**16))
    note(f"entities={n_ent} relations={n_rel} facts={n} seed={seed}")
    rng = np.random.default_rng(seed)
    quads = [(f"E{rng.integers(n_ent)}", f"R{rng.integers(n_rel)}", f"E{rng.integers(n_ent)}",
              day_to_iso(iso_to_day("2014-01-01") + int(rng.integers(60)))) for _ in range(n)]  # fmt: skip
    return TemporalKG.from_quads(quads), quads


@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 12, 31)))
def test_day_ordinals_round_trip(date):
    assert day_to_iso(iso_to_day(date.isoformat())) == date.isoformat()


@given(small_kgs(), st.data())
def test_mask_equals_a_brute_force_filter(kg_quads, data):
    kg, quads = kg_quads
    start = data.draw(st.none() | st.integers(0, 60))
    end = data.draw(st.none() | st.integers(0, 60))
    ent = data.draw(st.none() | st.sampled_from(kg.entities.names))
    rel = data.draw(st.none() | st.sampled_from(kg.relations.names))
    base = iso_to_day("2014-01-01")
    s = None if start is None else base + start
    e = None if end is None else base + end
    got = kg.mask(start=s, end=e, relations=None if rel is None else [kg.relation_id(rel)],
                  entities=None if ent is None else [kg.entity_id(ent)])  # fmt: skip
    want = [(s is None or iso_to_day(d) >= s) and (e is None or iso_to_day(d) <= e) and (rel is None or r == rel)
            and (ent is None or ent in (h, t)) for h, r, t, d in quads]  # fmt: skip
    assert got.tolist() == want


@given(small_kgs())
def test_facts_round_trip_the_quadruples(kg_quads):
    kg, quads = kg_quads
    assert [(f.head, f.relation, f.tail, f.date) for f in kg.facts(np.arange(len(kg)))] == quads


@given(small_kgs())
def test_one_hop_neighbourhood_is_every_fact_touching_the_seed(kg_quads):
    kg, quads = kg_quads
    seed = kg.entities.names[0]
    rows = kg.neighbourhood([0], hops=1)
    assert sorted(rows.tolist()) == [i for i, (h, _, t, _) in enumerate(quads) if seed in (h, t)]
    two = set(kg.neighbourhood([0], hops=2).tolist())
    assert set(rows.tolist()) <= two


def test_temporal_kg_implements_the_store_protocol():
    kg = TemporalKG.from_quads([("A", "R", "B", "2014-01-02")])
    assert isinstance(kg, FactStore)
    assert kg.texts() == ["A R B 2014-01-02"]
    assert kg.relation_counts(kg.mask()) == {"R": 1}
