"""Schemas and prompt libraries as data: entity, relation and event types, sub-prompts, TOML load/dump."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError

__all__ = [
    "BUNDLED_SCHEMAS",
    "EntityType",
    "EventType",
    "RelationType",
    "Schema",
    "dump_schema",
    "load_schema",
    "parse_schema",
    "slot_names",
]

BUNDLED_SCHEMAS = ("conll04", "phee", "casie")
TRIGGER = "trigger"  # the slot name of an event's trigger in every event prompt
ENTITY = "entity"  # the slot name of an entity prompt's answers
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


def slot_names(template: str) -> list[str]:
    """The ``{slot}`` names of a template in order of appearance."""
    return _SLOT.findall(template)


@dataclass(frozen=True, slots=True)
class EntityType:
    name: str
    description: str
    prompt: str | None = None  # type-specific sub-prompt with the slot {entity}


@dataclass(frozen=True, slots=True)
class RelationType:
    name: str
    head: str  # entity type of the head
    tail: str
    statement: str  # the filled prompt judged for consistency: "{head} works for {tail}."
    description: str = ""


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    description: str
    roles: tuple[str, ...]
    prompt: str | None = None  # type-specific: one definition-like template with {trigger} and role slots


@dataclass(frozen=True, slots=True)
class Schema:
    """What to extract and the prompts to do it with; ``fragments`` is the type-independent library F:
    ``entity`` and ``trigger`` templates (with ``{description}``) and one sub-prompt per argument role."""

    name: str
    entities: dict[str, EntityType] = field(default_factory=dict)
    relations: dict[str, RelationType] = field(default_factory=dict)
    events: dict[str, EventType] = field(default_factory=dict)
    fragments: dict[str, str] = field(default_factory=dict)
    separator: str = "|"
    null: str = "none"

    @property
    def types(self) -> list[str]:
        return [*self.entities, *self.relations, *self.events]

    def subset(self, *, events: list[str] | None = None) -> Schema:
        """The same schema with only the named event types (for held-out type experiments)."""
        keep = self.events if events is None else {k: self.events[k] for k in events}
        return Schema(name=self.name, entities=self.entities, relations=self.relations, events=keep,
                      fragments=self.fragments, separator=self.separator, null=self.null)  # fmt: skip

    def signature(self) -> dict[str, Any]:
        """What a trained checkpoint depends on (type names, roles, relation signatures)."""
        return {
            "entities": sorted(self.entities),
            "relations": {k: [r.head, r.tail] for k, r in sorted(self.relations.items())},
            "events": {k: list(e.roles) for k, e in sorted(self.events.items())},
        }


def _need(table: dict, key: str, where: str, kind: type = str) -> Any:
    if key not in table:
        raise ConfigError(
            f"{where}: missing field {key!r}", hint="see `promptie prompts --help` for the format"
        )
    value = table[key]
    if not isinstance(value, kind) or (kind is str and not value.strip()):
        raise ConfigError(f"{where}.{key}: expected a non-empty {kind.__name__}, got {value!r}")
    return value


def _check_slots(template: str, allowed: set[str], required: set[str], where: str) -> None:
    found = slot_names(template)
    unknown = [s for s in found if s not in allowed]
    if unknown:
        raise ConfigError(f"{where}: unknown slot {{{unknown[0]}}}", hint=f"slots here: {sorted(allowed)}")
    if len(set(found)) != len(found):
        raise ConfigError(f"{where}: a slot appears twice in {template!r}")
    missing = required - set(found)
    if missing:
        raise ConfigError(
            f"{where}: template lacks the slot {{{sorted(missing)[0]}}}", hint=f"in {template!r}"
        )


_TOP = {"name", "separator", "null", "entities", "relations", "events", "fragments"}


def parse_schema(data: dict[str, Any], *, source: str = "schema") -> Schema:
    """Validate a schema table (as read from TOML); every error names the field."""
    extra = set(data) - _TOP
    if extra:
        raise ConfigError(f"{source}: unknown field {sorted(extra)[0]!r}", hint=f"allowed: {sorted(_TOP)}")
    name = _need(data, "name", source)
    fragments = data.get("fragments", {})
    if not isinstance(fragments, dict) or not all(isinstance(v, str) for v in fragments.values()):
        raise ConfigError(f"{source}.fragments: expected a table of strings")
    entities = {}
    for key, t in data.get("entities", {}).items():
        where = f"{source}.entities.{key}"
        if not isinstance(t, dict):
            raise ConfigError(f"{where}: expected a table")
        prompt = t.get("prompt")
        if prompt is not None:
            _check_slots(_need(t, "prompt", where), {ENTITY}, {ENTITY}, f"{where}.prompt")
        entities[key] = EntityType(key, _need(t, "description", where), prompt)
    relations = {}
    for key, t in data.get("relations", {}).items():
        where = f"{source}.relations.{key}"
        head, tail = _need(t, "head", where), _need(t, "tail", where)
        for side, typ in (("head", head), ("tail", tail)):
            if typ not in entities:
                raise ConfigError(
                    f"{where}.{side}: unknown entity type {typ!r}", hint=f"known: {sorted(entities)}"
                )
        statement = _need(t, "statement", where)
        _check_slots(statement, {"head", "tail"}, {"head", "tail"}, f"{where}.statement")
        relations[key] = RelationType(key, head, tail, statement, t.get("description", ""))
    events = {}
    for key, t in data.get("events", {}).items():
        where = f"{source}.events.{key}"
        roles = _need(t, "roles", where, list)
        if not all(isinstance(r, str) and _SLOT.fullmatch("{" + r + "}") for r in roles) or TRIGGER in roles:
            raise ConfigError(f"{where}.roles: role names are identifiers other than 'trigger', got {roles}")
        prompt = t.get("prompt")
        if prompt is not None:
            allowed = {TRIGGER, *roles}
            _check_slots(_need(t, "prompt", where), allowed, allowed, f"{where}.prompt")
        events[key] = EventType(key, _need(t, "description", where), tuple(roles), prompt)
    for key, text in fragments.items():
        where = f"{source}.fragments.{key}"
        if key in (ENTITY, TRIGGER):
            _check_slots(text.replace("{description}", ""), {key}, {key}, where)
        else:
            _check_slots(text, {key}, {key}, where)
    sep, null = data.get("separator", "|"), data.get("null", "none")
    if not isinstance(sep, str) or not sep.strip() or not isinstance(null, str) or not null.strip():
        raise ConfigError(f"{source}: separator and null must be non-empty strings")
    return Schema(name=name, entities=entities, relations=relations, events=events, fragments=dict(fragments),
                  separator=sep, null=null)  # fmt: skip


def load_schema(spec: str | Path) -> Schema:
    """A bundled schema by name (``conll04``, ``phee``, ``casie``) or a TOML file."""
    if isinstance(spec, str) and spec in BUNDLED_SCHEMAS:
        text = resources.files("promptie.schemas").joinpath(f"{spec}.toml").read_text(encoding="utf-8")
        source = spec
    else:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"schema {spec!s} is neither a bundled schema nor a file",
                              hint=f"bundled: {', '.join(BUNDLED_SCHEMAS)}")  # fmt: skip
        text, source = path.read_text(encoding="utf-8"), path.name
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML ({err})") from None
    return parse_schema(data, source=source)


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _q(name)


def dump_schema(schema: Schema) -> str:
    """The schema as TOML text; ``parse_schema(tomllib.loads(dump_schema(s))) == s``."""
    lines = [f"name = {_q(schema.name)}", f"separator = {_q(schema.separator)}", f"null = {_q(schema.null)}"]
    for e in schema.entities.values():
        lines += ["", f"[entities.{_key(e.name)}]", f"description = {_q(e.description)}"]
        if e.prompt is not None:
            lines.append(f"prompt = {_q(e.prompt)}")
    for r in schema.relations.values():
        lines += ["", f"[relations.{_key(r.name)}]", f"head = {_q(r.head)}", f"tail = {_q(r.tail)}",
                  f"statement = {_q(r.statement)}", f"description = {_q(r.description)}"]  # fmt: skip
    for v in schema.events.values():
        lines += ["", f"[events.{_key(v.name)}]", f"description = {_q(v.description)}",
                  "roles = [" + ", ".join(_q(r) for r in v.roles) + "]"]  # fmt: skip
        if v.prompt is not None:
            lines.append(f"prompt = {_q(v.prompt)}")
    if schema.fragments:
        lines += ["", "[fragments]"] + [f"{_key(k)} = {_q(t)}" for k, t in schema.fragments.items()]
    return "\n".join(lines) + "\n"
