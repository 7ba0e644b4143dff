"""Hits@1 two ways: AT2QA's lenient substring rule and a strict first-answer exact match."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "answer_norm",
    "breakdown",
    "extract_answers",
    "lenient_correct",
    "split_answer_list",
    "strict_correct",
]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.I | re.S)
_TIME = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def extract_answers(text: str | None) -> list[str]:
    """The captures of ``<answer>...</answer>`` (AT2QA's regex), or the whole text when there is none."""
    if not text:
        return []
    found = _ANSWER.findall(text)
    return [a.strip() for a in found] if found else [text.strip()]


def answer_norm(text: str) -> str:
    """Lower-case, ``_`` to space, squeeze spaces (AT2QA's answer normalisation)."""
    return " ".join(str(text).replace("_", " ").lower().split())


def lenient_correct(pred_text: str | None, gold: Sequence[str]) -> bool:
    """AT2QA's ``is_correct``: some gold ``g`` with ``g in text or text in g`` (lower-cased, joined captures).

    An empty prediction is wrong (in AT2QA, "" is a substring of every gold; their empty replies are retried).
    """
    caps = extract_answers(pred_text)
    text = " ".join(caps).lower()
    if not text.strip():
        return False
    return any((g := str(x).lower()) in text or text in g for x in gold)


def split_answer_list(text: str) -> list[str]:
    """Split one answer string into items on ``,`` ``;`` newlines and a final ``and`` (names keep parentheses)."""
    parts = re.split(r"\s*(?:;|\n|,(?![^()]*\)))\s*|\s+and\s+(?![^()]*\))", text.strip())
    return [p.strip(" .") for p in parts if p and p.strip(" .")]


def strict_correct(pred_first: str | None, gold: Sequence[str]) -> bool:
    """Official-style Hits@1: the first predicted answer equals a gold answer after normalisation.

    Time answers are truncated to the gold's granularity (``2015-01-05`` matches gold ``2015-01``,
    but ``2015`` does not match ``2015-01``).
    """
    if not pred_first:
        return False
    p = answer_norm(pred_first)
    for g in gold:
        gn = answer_norm(g)
        if _TIME.match(gn) and _TIME.match(p):
            if len(p) >= len(gn) and p[: len(gn)] == gn:
                return True
        elif p == gn:
            return True
    return False


def breakdown(
    rows: Iterable[dict],
    keys: Sequence[str],
    metrics: Sequence[str],
    *,
    extra: Callable[[list[dict]], dict] | None = None,
) -> list[dict]:
    """Mean of each metric column per value of each key (plus an ``all`` row first)."""
    rows = list(rows)
    out = []

    def summary(group: str, value: str, sel: list[dict]) -> dict:
        row = {"group": group, "value": value, "n": len(sel)}
        for m in metrics:
            vals = [float(r[m]) for r in sel if r.get(m) is not None]
            row[m] = sum(vals) / len(vals) if vals else None
        if extra:
            row.update(extra(sel))
        return row

    out.append(summary("all", "all", rows))
    for key in keys:
        groups: dict[str, list[dict]] = defaultdict(list)
        for r in rows:
            groups[str(r.get(key, ""))].append(r)
        for value in sorted(groups):
            out.append(summary(key, value, groups[value]))
    return out
