"""Metric functions on hand-worked cases, including overlapping and nested spans."""

from __future__ import annotations

import pytest

from promptie.data import Document, Entity, Event, Relation, Span
from promptie.metrics import PRF, document_tuples, score, score_documents

TEXT = "New York City Mayor Eric Adams met Apple in New York ."
NYC = Entity(0, 13, "Loc")  # "New York City"
NY = Entity(0, 8, "Loc")  # "New York", nested in NYC
ADAMS = Entity(20, 30, "Peop")
MAYOR_ADAMS = Entity(14, 30, "Peop")  # overlaps ADAMS
APPLE = Entity(35, 40, "Org")


def test_prf_hand_worked():
    p = PRF(tp=2, pred=3, gold=4)
    assert p.precision == pytest.approx(2 / 3) and p.recall == pytest.approx(0.5)
    assert p.f1 == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert PRF(0, 0, 0).f1 == 0.0 and PRF(0, 3, 0).precision == 0.0


def test_nested_and_overlapping_entities_are_distinct_tuples():
    gold = Document("g", TEXT, [NYC, ADAMS, APPLE])
    pred = Document("p", TEXT, [NY, NYC, MAYOR_ADAMS, APPLE])
    s = score_documents([pred], [gold], metrics=("entity",))["entity"]
    # NYC and APPLE match; the nested NY and the overlapping "Mayor Eric Adams" do not
    assert (s.tp, s.pred, s.gold) == (2, 4, 3)
    assert s.f1 == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))


def test_entity_type_must_match():
    s = score([(0, 13, "Org")], [(0, 13, "Loc")])
    assert s.tp == 0 and s.pred == 1 and s.gold == 1


def test_relation_strict_needs_entity_types_boundary_does_not():
    gold = Document("g", TEXT, relations=[Relation(ADAMS, APPLE, "Work_For")])
    wrong_type = Document("p", TEXT, relations=[Relation(Entity(20, 30, "Org"), APPLE, "Work_For")])
    nested_head = Document("p", TEXT, relations=[Relation(MAYOR_ADAMS, APPLE, "Work_For")])
    s = score_documents([wrong_type], [gold], metrics=("relation_strict", "relation_boundary"))
    assert s["relation_strict"].tp == 0 and s["relation_boundary"].tp == 1
    s = score_documents([nested_head], [gold], metrics=("relation_strict", "relation_boundary"))
    assert s["relation_strict"].tp == 0 and s["relation_boundary"].tp == 0


def test_relation_direction_and_type_matter():
    gold = Document("g", TEXT, relations=[Relation(ADAMS, APPLE, "Work_For")])
    flipped = Document("p", TEXT, relations=[Relation(APPLE, ADAMS, "Work_For")])
    other = Document("p", TEXT, relations=[Relation(ADAMS, APPLE, "Live_In")])
    for p in (flipped, other):
        s = score_documents([p], [gold], metrics=("relation_strict", "relation_boundary"))
        assert s["relation_strict"].tp == s["relation_boundary"].tp == 0


def test_event_identification_vs_classification():
    gold = Document(
        "g",
        TEXT,
        events=[Event("Meet", (Span(31, 34),), (("Entity", Span(20, 30)), ("Place", Span(44, 52))))],
    )
    pred = Document(
        "p",
        TEXT,
        events=[
            Event("Contact", (Span(31, 34),), (("Entity", Span(20, 30)),)),
            Event("Meet", (Span(20, 30),), (("Place", Span(44, 52)), ("Entity", Span(44, 52)))),
        ],
    )
    s = score_documents([pred], [gold])
    # trigger "met": identified by the Contact event, classified by neither (Meet's trigger is wrong)
    assert (s["trigger_id"].tp, s["trigger_id"].pred, s["trigger_id"].gold) == (1, 2, 1)
    assert s["trigger_cls"].tp == 0
    # argument identification needs the event type: (Meet, Place span) matches, (Contact, Adams) not
    assert (s["argument_id"].tp, s["argument_id"].pred, s["argument_id"].gold) == (1, 2, 2)
    # classification also needs the role: (Meet, Place, NY) yes; (Meet, Entity, NY) no
    assert (s["argument_cls"].tp, s["argument_cls"].pred, s["argument_cls"].gold) == (1, 3, 2)


def test_nested_arguments_of_one_role_are_counted_separately():
    gold = Document(
        "g", TEXT, events=[Event("E", (Span(31, 34),), (("Place", Span(44, 52)), ("Place", Span(44, 48))))]
    )
    pred = Document("p", TEXT, events=[Event("E", (Span(31, 34),), (("Place", Span(44, 48)),))])
    s = score_documents([pred], [gold])["argument_cls"]
    assert (s.tp, s.pred, s.gold) == (1, 1, 2)


def test_duplicates_count_once_and_documents_add_up():
    d = Document("g", TEXT, [APPLE, APPLE])
    assert len(document_tuples(d)["entity"]) == 1
    s = score_documents(
        [Document("a", TEXT, [APPLE]), Document("b", TEXT, [])],
        [Document("a", TEXT, [APPLE]), Document("b", TEXT, [NYC])],
        metrics=("entity",),
    )["entity"]
    assert (s.tp, s.pred, s.gold) == (1, 1, 2)
    with pytest.raises(ValueError):
        score_documents([d], [], metrics=("entity",))
