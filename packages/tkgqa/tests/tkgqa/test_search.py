"""vector_search: default mode scans every match for time sorts and refuses bad input; compat mimics AT2QA."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.embed import HashEncoder
from tkgqa.index import FactIndex
from tkgqa.search import SearchTool, ToolError, parse_bound, tool_schema
from tkgqa.store import TemporalKG, iso_to_day


def _lines(hits):
    return [h.line_no for h in hits]


@given(
    st.sampled_from(["time_asc", "time_desc"]), st.integers(0, 15), st.sampled_from(["front", "back", None])
)
def test_default_time_sort_is_chronological_over_every_match(bench, hash_index, sort, ent_i, pos):
    enc, idx = hash_index
    tool = SearchTool(bench.store, idx, enc)
    kg = bench.store
    ent = kg.entities.names[ent_i]
    hits = tool.search("visit", sort=sort, entity_filter_name=ent, entity_filter_position=pos, top_k=200)
    e = [kg.entity_id(ent)]
    mask = kg.mask(heads=e) if pos == "front" else kg.mask(tails=e) if pos == "back" else kg.mask(entities=e)
    days = kg.days(np.flatnonzero(mask))
    want = sorted(days.tolist(), reverse=sort == "time_desc")[:200]
    assert [iso_to_day(h.date) for h in hits] == want


def test_ties_on_a_day_are_broken_by_relevance(tool):
    hits = tool.search("Praise Peru", sort="time_asc", top_k=200)
    for a, b in itertools.pairwise(hits):
        assert a.date < b.date or (a.date == b.date and a.score >= b.score)


def test_relevance_is_descending_and_top_k_is_respected(tool):
    hits = tool.search("China visit", top_k=7)
    assert len(hits) == 7
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def _needle_kg():
    # 60 near-duplicate facts of the query text, then one early fact that is textually far from it.
    quads = [(f"Person_{i}", "Make_a_visit", "China", f"2010-01-{1 + i % 28:02d}") for i in range(60)]
    quads.append(("Zed", "Threaten", "China", "2005-01-01"))
    kg = TemporalKG.from_quads(quads, digest="needle")
    enc = HashEncoder()
    return kg, FactIndex(enc.encode(kg.texts()), encoder_name=enc.name, kg_digest="needle"), enc


def test_compat_time_sort_sees_only_the_top_50_but_default_sees_all():
    kg, idx, enc = _needle_kg()
    compat = SearchTool(kg, idx, enc, mode="compat")
    default = SearchTool(kg, idx, enc)
    q = dict(
        query="Person visit China", sort="time_asc", entity_filter_name="China", entity_filter_position="back"
    )
    assert default.search(**q)[0].text.startswith("Zed")
    assert not any(h.text.startswith("Zed") for h in compat.search(**q))


def test_compat_reproduces_the_silent_fallbacks():
    kg, idx, enc = _needle_kg()
    compat = SearchTool(kg, idx, enc, mode="compat")
    everything = _lines(compat.search("visit", top_k=10))
    assert _lines(compat.search("visit", start_date="2010-13-01", end_date="2005-01-01")) == everything
    assert _lines(compat.search("visit", sort="score_desc")) == everything
    assert _lines(compat.search("visit", entity_filter_name="Zed")) == everything  # no position: no filter
    assert compat.search("visit", entity_filter_name="Nobody", entity_filter_position="front") == []


def test_compat_queries_follow_at2qa_and_send_unrounded_scores():
    kg, idx, enc = _needle_kg()
    compat = SearchTool(kg, idx, enc, mode="compat")
    question = "Who visited China first?"
    asked = compat.call_json({"query": question})
    # AT2QA: args.get("query", question): a call without a query searches for the question.
    assert compat.call_json({"sort": "relevance"}, question=question) == asked
    # A query that is not a string: AT2QA's embedding request fails and the call returns [].
    assert compat.call_json({"query": None}, question=question) == []
    # AT2QA json.dumps the float score; compat does not round it, the default mode rounds to 4 places.
    raw = compat.search(question)
    assert [h["score"] for h in asked] == [h.score for h in raw]
    assert any(h.score != round(h.score, 4) for h in raw)
    default = SearchTool(kg, idx, enc).call_json({"query": question})
    assert [h["score"] for h in default] == [round(h.score, 4) for h in raw]


@pytest.mark.parametrize("arguments", [{}, {"query": None}, {"query": "  "}, {"query": 3}])
def test_default_mode_requires_a_query(tool, arguments):
    with pytest.raises(ToolError, match="query"):
        tool.call_json(arguments, question="Who visited China?")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"start_date": "2010-13-01"}, "invalid date"), ({"start_date": "2012-01-01", "end_date": "2011-01-01"}, "empty date range"),
     ({"sort": "score_desc"}, "unknown sort"), ({"entity_filter_name": "Chnia", "entity_filter_position": "top"}, "position"),
     ({"entity_filter_name": "Xyzzy Quux"}, "unknown entity"), ({"relation_filter": "Visit_the_moon"}, "unknown relation"),
     ({"top_k": 0}, "top_k")],
)  # fmt: skip
def test_default_mode_refuses_bad_calls_with_a_reason(tool, kwargs, match):
    with pytest.raises(ToolError, match=match):
        tool.search("visit", **kwargs)


def test_default_mode_resolves_close_spellings_and_suggests_for_unknown(tool):
    exact = _lines(tool.search("visit", entity_filter_name="Police_(China)", top_k=50))
    assert _lines(tool.search("visit", entity_filter_name="police (china)", top_k=50)) == exact
    with pytest.raises(ToolError, match="did you mean 'China'"):
        tool.search("visit", entity_filter_name="Chinaa x")


def test_year_and_month_bounds_cover_their_period():
    assert parse_bound("2014", end=False) == iso_to_day("2014-01-01")
    assert parse_bound("2014-02", end=True) == iso_to_day("2014-02-28")


def test_call_json_rejects_unknown_arguments_and_schema_lists_the_seven_parameters(tool):
    with pytest.raises(ToolError, match="unknown argument"):
        tool.call_json({"query": "x", "limit": 3})
    params = tool_schema()["function"]["parameters"]["properties"]
    assert set(params) == {"query", "start_date", "end_date", "sort", "entity_filter_name", "entity_filter_position",
                           "relation_filter"}  # fmt: skip


@given(
    st.integers(0, 27),
    st.sampled_from(["front", "back", None]),
    st.none() | st.sampled_from(["Make_a_visit", "Praise_or_endorse", "Accuse"]),
    st.none() | st.dates().map(lambda d: d.replace(year=2005 + d.year % 11).isoformat()),
    st.integers(0, 2000),
    st.sampled_from(["relevance", "time_asc", "time_desc"]),
)
def test_every_hit_respects_the_filters_and_window_and_calls_are_deterministic(
    bench, hash_index, ent_i, pos, rel, start, span, sort
):
    enc, idx = hash_index
    tool = SearchTool(bench.store, idx, enc)
    ent = bench.store.entities.names[ent_i % len(bench.store.entities)]
    end = None if start is None else str(np.datetime64(start) + span)
    call = dict(query="praise visit", entity_filter_name=ent, entity_filter_position=pos, relation_filter=rel,
                start_date=start, end_date=end, sort=sort, top_k=50)  # fmt: skip
    hits = tool.search(**call)
    for h in hits:
        head, relation, tail, date = h.text.split("\t")
        assert ent == head if pos == "front" else ent == tail if pos == "back" else ent in (head, tail)
        assert rel is None or relation == rel
        assert start is None or start <= date <= end
    assert [(h.line_no, h.score) for h in tool.search(**call)] == [(h.line_no, h.score) for h in hits]


@given(st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, -1.0]), max_size=60), st.integers(1, 70))
def test_top_order_is_the_stable_full_sort_cut_at_k(scores, k):
    from tkgqa.search import top_order

    sims = np.asarray(scores, dtype=np.float32)
    assert top_order(sims, k).tolist() == np.argsort(-sims, kind="stable")[:k].tolist()
