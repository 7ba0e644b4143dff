"""Out-of-scope questions: the bundled set (trivia, missing relations, entities, dates) and abstention by category."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from effcore.errors import ConfigError, DataNotFoundError

__all__ = ["OUT_OF_SCOPE", "ScopeQuestion", "load_scope_questions", "scope_table"]

OUT_OF_SCOPE = "out_of_scope.jsonl"
"""The bundled set in ``tkgqa/data``: 64 questions, 16 per category, written for issue 17 (not tuned on)."""


@dataclass(frozen=True, slots=True)
class ScopeQuestion:
    """A question the KG cannot answer, and why (``category``: trivia, relation, entity or time)."""

    id: int
    question: str
    category: str


def load_scope_questions(path: str | Path | None = None) -> list[ScopeQuestion]:
    """The bundled out-of-scope set, or a JSONL file of ``{"question": ..., "category": ...}`` lines."""
    if path is None:
        text = resources.files("tkgqa").joinpath("data", OUT_OF_SCOPE).read_text(encoding="utf-8")
        where = f"tkgqa/data/{OUT_OF_SCOPE}"
    else:
        p = Path(path)
        if not p.is_file():
            raise DataNotFoundError(
                f"{p} does not exist", hint="pass a JSONL file of question/category lines"
            )
        text, where = p.read_text(encoding="utf-8"), str(p)
    out = []
    for no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            q, cat = str(rec["question"]).strip(), str(rec["category"]).strip()
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ConfigError(f"{where}:{no}: not a JSON object with 'question' and 'category'",
                              hint='write one {"question": "...", "category": "..."} per line') from None  # fmt: skip
        if not q or not cat:
            raise ConfigError(f"{where}:{no}: empty question or category")
        out.append(ScopeQuestion(id=int(rec.get("id", no)), question=q, category=cat))
    if not out:
        raise ConfigError(f"{where} holds no questions", hint="write one JSON object per line")
    return out


def scope_table(
    rows: Sequence[dict[str, Any]], *, key: Callable[[dict], str] = lambda r: r["category"]
) -> list[dict]:
    """Abstention rate per category (and overall), with the kinds of reason given."""
    groups: dict[str, list[dict]] = {"all": list(rows)}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    table = []
    for name, sel in groups.items():
        kinds = Counter(r["kind"] for r in sel if r["abstained"])
        table.append({"category": name, "n": len(sel), "abstained": sum(r["abstained"] for r in sel),
                      "rate": sum(r["abstained"] for r in sel) / max(len(sel), 1),
                      "kinds": ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))})  # fmt: skip
    return table
