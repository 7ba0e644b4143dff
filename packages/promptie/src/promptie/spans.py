"""Words with character offsets, the candidate answer spans of a text, and overlapping windows."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Window", "candidate_spans", "occurrences", "windows", "words"]

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every word (a run of word characters) and punctuation mark."""
    return [m.span() for m in _WORD.finditer(text)]


def candidate_spans(text: str, *, max_words: int) -> dict[str, list[tuple[int, int]]]:
    """Every contiguous run of 1..``max_words`` words: span text -> its occurrences (char offsets).

    These are the only answers constrained decoding can emit, so every answer is a substring of
    the text that starts and ends on word boundaries.
    """
    ws = words(text)
    out: dict[str, list[tuple[int, int]]] = {}
    for i, (start, _) in enumerate(ws):
        for j in range(i, min(i + max_words, len(ws))):
            end = ws[j][1]
            out.setdefault(text[start:end], []).append((start, end))
    return out


def occurrences(text: str, span: str, *, max_words: int) -> list[tuple[int, int]]:
    """Where ``span`` occurs in ``text`` on word boundaries (the offsets an answer maps to)."""
    return candidate_spans(text, max_words=max_words).get(span, [])


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # character offsets into the full text
    end: int


def windows(text: str, *, max_words: int, overlap: int) -> list[Window]:
    """Overlapping windows of at most ``max_words`` words covering every word of ``text``.

    Consecutive windows share ``overlap`` words, so a mention cut by one window boundary lies whole
    in the next window; nothing is ever dropped or truncated.
    """
    if overlap >= max_words:
        raise ValueError(f"overlap ({overlap}) must be smaller than max_words ({max_words})")
    ws = words(text)
    if not ws:
        return []
    stride = max_words - overlap
    out, i = [], 0
    while True:
        last = min(i + max_words, len(ws)) - 1
        out.append(Window(ws[i][0], ws[last][1]))
        if last == len(ws) - 1:
            return out
        i += stride
