"""Parse MultiTQ-style questions: time expressions, answer kind and granularity, first/last, reference cues."""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field

import numpy as np

from tkgqa.store import day_to_iso, iso_to_day

__all__ = ["DateExpr", "ParsedQuestion", "date_window", "parse_dates", "parse_question", "period_of"]

_MONTH_NUM = {m.lower(): i for i, m in enumerate(calendar.month_name) if m}
_MONTH_NUM.update({m.lower(): i for i, m in enumerate(calendar.month_abbr) if m})
_MONTH_NUM["sept"] = 9
_MON = "|".join(sorted(_MONTH_NUM, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"
_YEAR = r"((?:19|20)\d{2})"
_DATE_PATTERNS = (
    ("day", re.compile(rf"\b(?:the )?(\d{{1,2}}){_ORD}(?: of)? ({_MON})\.?,?(?: (?:of )?(?:the year|in))? {_YEAR}\b", re.I), "dmy"),
    ("day", re.compile(rf"\b({_MON})\.? (?:the )?(\d{{1,2}}){_ORD},?(?: (?:of )?(?:the year|in))? {_YEAR}\b", re.I), "mdy"),
    ("day", re.compile(r"\b((?:19|20)\d{2})-(\d{2})-(\d{2})\b"), "iso"),
    ("day", re.compile(r"\b(\d{1,2})[./](\d{1,2})[./]((?:19|20)\d{2})\b"), "dmy_num"),
    ("month", re.compile(rf"\b(?:the month of )?({_MON})\.?,?(?: (?:of|in))?(?: the year)? {_YEAR}\b", re.I), "my"),
    ("month", re.compile(r"\b((?:19|20)\d{2})-(\d{2})\b"), "isom"),
    ("year", re.compile(rf"\b(?:the year )?{_YEAR}\b", re.I), "y"),
)  # fmt: skip
_BEFORE = re.compile(
    r"\b(before|prior to|earlier than|until|up to)\s*(?:the\s+)?(?:date\s+|year\s+|month\s+of\s+)?$", re.I
)
_AFTER = re.compile(
    r"\b(after|since|following|later than|from)\s*(?:the\s+)?(?:date\s+|year\s+|month\s+of\s+)?$", re.I
)


@dataclass(frozen=True, slots=True)
class DateExpr:
    """A date in the text: its period ``[start, end]`` in days, granularity, relation and character span."""

    start: int
    end: int
    level: str
    relation: str  # "on" (within the period), "before" or "after"
    span: tuple[int, int]


def _period(kind: str, g: tuple[str, ...]) -> tuple[int, int]:
    if kind == "dmy":
        y, m, d = int(g[2]), _MONTH_NUM[g[1].lower()], int(g[0])
    elif kind == "mdy":
        y, m, d = int(g[2]), _MONTH_NUM[g[0].lower()], int(g[1])
    elif kind == "dmy_num":
        y, m, d = int(g[2]), int(g[1]), int(g[0])
    elif kind == "iso":
        y, m, d = int(g[0]), int(g[1]), int(g[2])
    elif kind in ("my", "isom"):
        y, m = (int(g[1]), _MONTH_NUM[g[0].lower()]) if kind == "my" else (int(g[0]), int(g[1]))
        last = calendar.monthrange(y, m)[1]
        return iso_to_day(f"{y:04d}-{m:02d}-01"), iso_to_day(f"{y:04d}-{m:02d}-{last:02d}")
    else:
        y = int(g[0])
        return iso_to_day(f"{y:04d}-01-01"), iso_to_day(f"{y:04d}-12-31")
    day = iso_to_day(f"{y:04d}-{m:02d}-{d:02d}")
    return day, day


def parse_dates(text: str) -> list[DateExpr]:
    """Every non-overlapping date expression (finest granularity first), in text order."""
    found: list[DateExpr] = []
    taken: list[tuple[int, int]] = []
    for level, pattern, kind in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            a, b = m.span()
            if any(a < y and x < b for x, y in taken):
                continue
            try:
                start, end = _period(kind, m.groups())
            except (ValueError, KeyError):
                continue
            before = text[max(0, a - 30) : a]
            rel = "before" if _BEFORE.search(before) else "after" if _AFTER.search(before) else "on"
            found.append(DateExpr(start, end, level, rel, (a, b)))
            taken.append((a, b))
    return sorted(found, key=lambda d: d.span)


_TIME_Q = re.compile(
    r"\b(when|(what|which) (year|month|day|date|time|period)|exact (year|month|day|date|time)|"
    r"(year|month|date|day|time) (when|in which|did|was|that))\b",
    re.I,
)
_ENTITY_Q = re.compile(r"^\s*(who|whom|which (country|person|organi[sz]ation|entity|group|one))\b", re.I)


@dataclass(slots=True)
class ParsedQuestion:
    """What the planner needs from the text (entities are linked separately on ``clean``)."""

    text: str
    clean: str  # the text with date expressions replaced by a placeholder word
    answer: str  # "entity" or "time"
    granularity: str  # of a time answer: "day", "month" or "year"
    order: str | None  # "first", "last" or None
    dates: list[DateExpr] = field(default_factory=list)
    same: str | None = None  # "day"/"month"/"year" for "in the same month as X"


def _granularity(q: str) -> str:
    if re.search(r"\b(what|which|exact|the) year\b|\byear (when|in which|did)\b", q):
        return "year"
    if re.search(r"\b(what|which|exact|the) month\b|\bmonth (when|in which|did)\b", q):
        return "month"
    return "day"


def parse_question(text: str) -> ParsedQuestion:
    """Parse the answer kind, its granularity, first/last, explicit dates and "same period" cues."""
    q = text.lower()
    same = re.search(r"\bsame (day|month|year)\b", q)
    is_time = bool(_TIME_Q.search(q)) and not _ENTITY_Q.search(q)
    if same and is_time and not re.search(r"^\s*(when|in (which|what) (year|month))", q):
        is_time = False
    order = None
    first = re.search(r"\b(first|earliest|initially|for the first time)\b", q)
    last = re.search(r"\b(last|latest|most recent(ly)?|final(ly)?|for the last time)\b", q)
    if first and not last:
        order = "first"
    elif last and not first:
        order = "last"
    elif first and last:
        order = "first" if first.start() > last.start() else "last"
    dates = parse_dates(text)
    clean = text
    for d in reversed(dates):
        clean = clean[: d.span[0]] + " zzdate " + clean[d.span[1] :]
    return ParsedQuestion(
        text=text, clean=clean, answer="time" if is_time else "entity",
        granularity=_granularity(q) if is_time else "day", order=order, dates=dates,
        same=same.group(1) if same else None,
    )  # fmt: skip


def date_window(p: ParsedQuestion) -> tuple[int | None, int | None]:
    """The days ``[start, end]`` (None: open) the question's first date allows: on, before or after it."""
    if not p.dates:
        return None, None
    d = p.dates[0]
    if d.relation == "before":
        return None, d.start - 1
    if d.relation == "after":
        return d.end + 1, None
    return d.start, d.end


def period_of(day: int, level: str) -> tuple[int, int]:
    """The day, month or year (``level``) holding ``day``, as inclusive days."""
    iso = day_to_iso(day)
    if level == "year":
        return iso_to_day(iso[:4] + "-01-01"), iso_to_day(iso[:4] + "-12-31")
    if level == "month":
        start = iso_to_day(iso[:7] + "-01")
        nxt = np.datetime64(iso[:7], "M") + 1
        return start, int(np.datetime64(nxt, "D").astype(np.int64)) - 1
    return day, day
