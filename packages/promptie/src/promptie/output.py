"""JSON shapes of extraction results: every span with its character offsets and its text."""

from __future__ import annotations

from typing import Any

from promptie.data import Document

__all__ = ["document_json"]


def document_json(d: Document) -> dict[str, Any]:
    """``{"id", "text", "entities", "relations", "events"}`` with ``start``/``end`` character offsets."""
    t = d.text

    def span(s, e) -> dict[str, Any]:
        return {"start": s, "end": e, "text": t[s:e]}

    return {
        "id": d.id,
        "text": t,
        "entities": [{**span(e.start, e.end), "type": e.type} for e in d.entities],
        "relations": [
            {
                "type": r.type,
                "head": {**span(r.head.start, r.head.end), "type": r.head.type},
                "tail": {**span(r.tail.start, r.tail.end), "type": r.tail.type},
            }
            for r in d.relations
        ],
        "events": [
            {
                "type": v.type,
                "triggers": [span(s.start, s.end) for s in v.triggers],
                "arguments": [{**span(s.start, s.end), "role": role} for role, s in v.arguments],
            }
            for v in d.events
        ],
    }
