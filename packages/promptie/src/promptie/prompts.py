"""Prompt construction: a type's prompt from its own sub-prompt (type-specific) or from shared fragments."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from effcore.errors import ConfigError
from promptie.schema import ENTITY, TRIGGER, Schema

__all__ = ["MODES", "Mode", "Prompt", "compose", "compose_all"]

Mode = Literal["specific", "composable"]
MODES: tuple[Mode, ...] = ("specific", "composable")
_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_\-]*)\}")


@dataclass(frozen=True, slots=True)
class Prompt:
    """``Pr^j``: literal text ``parts`` around the ``slots`` (``len(parts) == len(slots) + 1``)."""

    type: str
    task: Literal["entity", "event"]
    mode: Mode
    parts: tuple[str, ...]
    slots: tuple[str, ...]

    def render(self, marker: Callable[[int], str]) -> str:
        """The prompt text with slot ``k`` shown as ``marker(k)`` (``[0]`` for causal LMs, a T5 sentinel)."""
        out = [self.parts[0]]
        for k, part in enumerate(self.parts[1:]):
            out += [marker(k), part]
        return "".join(out)

    @property
    def text(self) -> str:
        """The template as written, slots in braces."""
        return self.render(lambda k: "{" + self.slots[k] + "}")


def _split(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pieces = _SLOT.split(template)
    return tuple(pieces[0::2]), tuple(pieces[1::2])


def _fragment(schema: Schema, key: str, owner: str) -> str:
    if key not in schema.fragments:
        raise ConfigError(
            f"{owner}: no fragment for {key!r} in the library",
            hint=f'add `{key} = "... {{{key}}} ..."` under [fragments] of the schema',
        )
    return schema.fragments[key]


def compose(schema: Schema, type_name: str, mode: Mode) -> Prompt:
    """The prompt of one entity or event type (pure: same schema, type and mode give the same prompt).

    ``specific``: the type's own sub-prompt. ``composable``: the library's ``entity`` / ``trigger``
    fragment with the type's description, then one fragment per argument role in the schema's order,
    so a type never seen in training gets a prompt from fragments other types taught.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown prompt mode {mode!r}", hint=f"use one of {', '.join(MODES)}")
    if type_name in schema.entities:
        t = schema.entities[type_name]
        if mode == "specific":
            if t.prompt is None:
                raise ConfigError(f"entity type {type_name!r} has no prompt",
                                  hint=f"add prompt = \"... {{{ENTITY}}}\" to [entities.{type_name}] or use composable prompts")  # fmt: skip
            template = t.prompt
        else:
            template = _fragment(schema, ENTITY, f"entity type {type_name!r}").replace(
                "{description}", t.description
            )
        parts, slots = _split(template)
        return Prompt(type_name, "entity", mode, parts, slots)
    if type_name in schema.events:
        e = schema.events[type_name]
        if mode == "specific":
            if e.prompt is None:
                raise ConfigError(f"event type {type_name!r} has no prompt",
                                  hint=f"add prompt = \"...\" with {{trigger}} and its roles to [events.{type_name}] or use composable prompts")  # fmt: skip
            template = e.prompt
        else:
            owner = f"event type {type_name!r}"
            trigger = _fragment(schema, TRIGGER, owner).replace("{description}", e.description)
            template = " ".join([trigger, *(_fragment(schema, r, owner) for r in e.roles)])
        parts, slots = _split(template)
        return Prompt(type_name, "event", mode, parts, slots)
    raise ConfigError(f"type {type_name!r} is not an entity or event type of schema {schema.name!r}",
                      hint=f"known: {', '.join([*schema.entities, *schema.events])}")  # fmt: skip


def compose_all(schema: Schema, mode: Mode) -> list[Prompt]:
    """Every entity and event type's prompt, in schema order (relations are judged, not generated)."""
    return [compose(schema, name, mode) for name in [*schema.entities, *schema.events]]
