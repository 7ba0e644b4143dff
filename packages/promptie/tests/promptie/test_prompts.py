"""Prompt composition is pure; schemas round-trip through TOML; malformed schemas name the field."""

from __future__ import annotations

import copy
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from effcore.errors import ConfigError
from promptie.prompts import compose, compose_all
from promptie.schema import BUNDLED_SCHEMAS, dump_schema, load_schema, parse_schema

NAMES = st.from_regex(r"[A-Z][a-z]{1,6}(_[A-Z][a-z]{1,4})?", fullmatch=True)
WORDS = st.text(alphabet="abcdefghij klmn,'\"\\é", min_size=1, max_size=20).filter(
    lambda s: s.strip() and "{" not in s
)


@st.composite
def schemas(draw):
    ents = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    roles = draw(st.lists(NAMES.filter(lambda n: n not in ents), min_size=1, max_size=3, unique=True))
    evs = draw(st.lists(NAMES.filter(lambda n: n not in ents and n not in roles), max_size=2, unique=True))
    data = {
        "name": draw(NAMES),
        "separator": draw(st.sampled_from(["|", ";", "||"])),
        "null": draw(st.sampled_from(["none", "nil"])),
        "entities": {
            e: {
                "description": draw(WORDS),
                **({"prompt": draw(WORDS) + " {entity}."} if draw(st.booleans()) else {}),
            }
            for e in ents
        },
        "relations": {
            f"R{i}": {
                "head": draw(st.sampled_from(ents)),
                "tail": draw(st.sampled_from(ents)),
                "statement": "{head} " + draw(WORDS) + " {tail}.",
                "description": draw(WORDS),
            }
            for i in range(draw(st.integers(0, 2)))
        },
        "events": {},
        "fragments": {
            "entity": "The {description} are {entity}.",
            "trigger": "The {description} is {trigger}.",
        },
    }
    for e in evs:
        rs = draw(st.lists(st.sampled_from(roles), min_size=1, unique=True))
        data["events"][e] = {
            "description": draw(WORDS),
            "roles": rs,
            "prompt": "{trigger}: " + " ".join(f"{draw(WORDS)} {{{r}}}" for r in rs),
        }
    for r in roles:
        data["fragments"][r] = draw(WORDS) + f" {{{r}}}."
    return parse_schema(data)


@given(schemas())
def test_schema_round_trips_through_toml(schema):
    assert parse_schema(tomllib.loads(dump_schema(schema))) == schema


@given(schemas(), st.sampled_from(["specific", "composable"]))
def test_composition_is_pure_and_deterministic(schema, mode):
    before = copy.deepcopy(schema)
    types = [
        t
        for t in [*schema.entities, *schema.events]
        if mode == "composable" or (schema.entities.get(t) or schema.events.get(t)).prompt is not None
    ]
    first = [compose(schema, t, mode) for t in types]
    assert [compose(schema, t, mode) for t in types] == first
    assert schema == before
    for p in first:
        assert len(p.parts) == len(p.slots) + 1
        assert p.render(lambda k: f"<{k}>").count("<") == len(p.slots)


@pytest.mark.parametrize("name", BUNDLED_SCHEMAS)
def test_bundled_schemas_load_round_trip_and_compose_both_ways(name):
    s = load_schema(name)
    assert parse_schema(tomllib.loads(dump_schema(s))) == s
    for mode in ("specific", "composable"):
        for p in compose_all(s, mode):
            assert p.slots[0] in ("entity", "trigger")
            if p.task == "event":
                assert set(p.slots) == {"trigger", *s.events[p.type].roles}


def test_composable_event_prompt_is_built_from_shared_fragments():
    s = load_schema("casie")
    p = compose(s, "Ransom", "composable")
    assert p.slots == ("trigger", *s.events["Ransom"].roles)
    assert "The victim is {Victim}." in p.text and "ransomware attack" in p.text
    # the Victim fragment is the same text in every event type that has the role
    assert "The victim is {Victim}." in compose(s, "Phishing", "composable").text


def test_a_new_type_needs_no_code_only_its_roles_in_the_library():
    s = load_schema("casie")
    data = tomllib.loads(dump_schema(s))
    data["events"]["Extortion"] = {"description": "extortion", "roles": ["Attacker", "Victim", "Price"]}
    p = compose(parse_schema(data), "Extortion", "composable")
    assert p.slots == ("trigger", "Attacker", "Victim", "Price")
    with pytest.raises(ConfigError, match="has no prompt"):
        compose(parse_schema(data), "Extortion", "specific")


@pytest.mark.parametrize("patch, match", [
    (lambda d: d.pop("name"), "missing field 'name'"),
    (lambda d: d["entities"]["Peop"].pop("description"), "entities.Peop: missing field 'description'"),
    (lambda d: d["relations"]["Kill"].update(head="Animal"), "relations.Kill.head: unknown entity type 'Animal'"),
    (lambda d: d["relations"]["Kill"].update(statement="{head} killed someone"), "relations.Kill.statement: template lacks the slot {tail}"),
    (lambda d: d["entities"]["Org"].update(prompt="Orgs are {orgs}."), "entities.Org.prompt: unknown slot {orgs}"),
    (lambda d: d.update(colour="red"), "unknown field 'colour'"),
    (lambda d: d["fragments"].update(entity="no slot here"), "fragments.entity: template lacks the slot {entity}"),
])  # fmt: skip
def test_malformed_schema_errors_name_the_field(patch, match):
    data = tomllib.loads(dump_schema(load_schema("conll04")))
    patch(data)
    with pytest.raises(ConfigError, match=match.replace("{", r"\{").replace("}", r"\}")):
        parse_schema(data, source="my.toml")


def test_missing_fragment_for_a_role_is_named():
    data = tomllib.loads(dump_schema(load_schema("phee")))
    del data["fragments"]["Drug"]
    with pytest.raises(ConfigError, match="no fragment for 'Drug'"):
        compose(parse_schema(data), "Adverse_event", "composable")
