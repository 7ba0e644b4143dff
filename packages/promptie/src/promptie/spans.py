"""Words with character offsets, the candidate answer spans of a text, and overlapping windows."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Window", "candidate_spans", "occurrences", "windows", "words"]

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every word (a run of word characters) and punctuation mark."""
    return [m.span() for m in _WORD.finditer(text)]


def candidate_spans(text: str, *, max_words: int, separator: str = "") -> dict[str, list[tuple[int, int]]]:
    """Every contiguous run of 1..``max_words`` words: span text -> its occurrences (char offsets).

    These are the only answers constrained decoding can emit, so every answer is a substring of
    the text that starts and ends on word boundaries. Spans containing ``separator`` are left out:
    ``a | b`` as one answer reads exactly like the two answers ``a`` and ``b``.
    """
    ws = words(text)
    out: dict[str, list[tuple[int, int]]] = {}
    for i, (start, _) in enumerate(ws):
        for j in range(i, min(i + max_words, len(ws))):
            span = text[start : ws[j][1]]
            if separator and separator in span:
                break  # every longer span from this start contains it too
            out.setdefault(span, []).append((start, ws[j][1]))
    return out


def occurrences(text: str, span: str, *, max_words: int, separator: str = "") -> list[tuple[int, int]]:
    """Where ``span`` occurs in ``text`` on word boundaries (the offsets an answer maps to)."""
    return candidate_spans(text, max_words=max_words, separator=separator).get(span, [])


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
