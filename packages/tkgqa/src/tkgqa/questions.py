"""MultiTQ questions: loading, splits, labelled metadata and metadata derived from the question text."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from effcore.assets import data_file
from effcore.errors import ConfigError, DataNotFoundError

__all__ = [
    "LABELLED_FILES",
    "QTYPES",
    "QUESTIONS_FILE",
    "SPLITS",
    "Question",
    "derive_meta",
    "load_questions",
    "load_reference",
]

QUESTIONS_FILE = "multitq/questions.jsonl.gz"
REFERENCE_FILE = "multitq/at2qa_reference_correct.jsonl.gz"
LABELLED_FILES = ("multitq/labeled_500.json", "multitq/labeled_3000.json")
SPLITS = ("dev", "test", "all")
"""dev: a seeded 10% hash split of MultiTQ's *test* questions (MultiTQ's own dev questions are not
available), used for tuning; test: the other 90%, reported once; all: both."""
QTYPES = ("equal", "before_after", "first_last", "equal_multi", "after_first", "before_last")
MULTIPLE = {"equal_multi", "after_first", "before_last"}
_TIME = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


@dataclass(kw_only=True, slots=True)
class Question:
    """One MultiTQ question; ``meta_source`` says whether qtype/time_level/qlabel are labelled or derived."""

    quid: int
    question: str
    answers: list[str]
    answer_type: str = ""
    split: str = ""
    qtype: str = ""
    time_level: str = ""
    qlabel: str = ""
    meta_source: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


_MONTHS = ("january|february|march|april|may|june|july|august|september|october|november|december|"
           "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec")  # fmt: skip
_DAY_DATE = re.compile(
    rf"\b(\d{{1,2}}(st|nd|rd|th)? ({_MONTHS})\b,? (the year )?\d{{4}}|({_MONTHS}) \d{{1,2}}(st|nd|rd|th)?,? \d{{4}})",
    re.I,
)
_MONTH_DATE = re.compile(rf"\b({_MONTHS})\b,? (of )?(the year )?\d{{4}}", re.I)
_YEAR = re.compile(r"\b(19|20)\d{2}\b")


def derive_meta(text: str, answers: list[str]) -> dict[str, str]:
    """Best-effort qtype / time_level / qlabel from the question text (MultiTQ templates); see README.

    Only the 3,469 labelled questions carry official metadata; for the others this guess is used and
    every breakdown says so (``meta_source = "derived"``).
    """
    q = text.lower()
    is_time = bool(answers) and all(_TIME.match(a) for a in answers)
    order = "first" if re.search(r"\bfirst\b", q) else "last" if re.search(r"\blast\b", q) else ""
    same = re.search(r"\bsame (day|month|year)\b", q)
    has_date = bool(_DAY_DATE.search(q) or _MONTH_DATE.search(q) or _YEAR.search(q))
    ba = re.search(r"\b(before|after|prior to|following)\b", q)
    if same:
        qtype = "equal_multi"
    elif ba and order and not has_date:
        qtype = "after_first" if order == "first" else "before_last"
    elif ba:
        qtype = "before_after"
    elif order:
        qtype = "first_last"
    else:
        qtype = "equal"
    if is_time:
        level = {4: "year", 7: "month"}.get(len(answers[0]), "day")
    elif same:
        level = same.group(1)
    elif _DAY_DATE.search(q):
        level = "day"
    elif _MONTH_DATE.search(q):
        level = "month"
    elif _YEAR.search(q):
        level = "year"
    else:
        level = "day"
    return {"qtype": qtype, "time_level": level, "qlabel": "Multiple" if qtype in MULTIPLE else "Single"}


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_questions(
    data_dir: str | Path | None = None,
    *,
    split: str = "dev",
    labelled_only: bool = False,
    quids: Iterable[int] | None = None,
) -> list[Question]:
    """Questions of ``split`` (dev, test or all) with official metadata where labelled, else derived."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", hint=f"use one of {', '.join(SPLITS)}")
    rows = _read_jsonl_gz(data_file(QUESTIONS_FILE, root=data_dir))
    labelled: dict[int, dict] = {}
    for rel in LABELLED_FILES:
        try:
            path = data_file(rel, root=data_dir)
        except DataNotFoundError:
            continue
        for rec in json.loads(path.read_text(encoding="utf-8")):
            labelled[int(rec["quid"])] = rec
    wanted = set(quids) if quids is not None else None
    out = []
    for r in rows:
        if split != "all" and r.get("split") != split:
            continue
        if wanted is not None and r["quid"] not in wanted:
            continue
        q = Question(quid=int(r["quid"]), question=r["question"], answers=list(r["answers"]),
                     answer_type=r.get("answer_type", ""), split=r.get("split", ""))  # fmt: skip
        if (lab := labelled.get(q.quid)) is not None:
            q.qtype, q.time_level, q.qlabel, q.meta_source = (
                lab["qtype"],
                lab["time_level"],
                lab["qlabel"],
                "labelled",
            )
        elif labelled_only:
            continue
        else:
            meta = derive_meta(q.question, q.answers)
            q.qtype, q.time_level, q.qlabel, q.meta_source = (
                meta["qtype"],
                meta["time_level"],
                meta["qlabel"],
                "derived",
            )
        out.append(q)
    return out


def load_reference(data_dir: str | Path | None = None) -> dict[int, dict]:
    """AT2QA's published per-question results by quid: ``correct`` (lenient), ``n_tool_calls``, ``pred``."""
    return {int(r["qid"]): r for r in _read_jsonl_gz(data_file(REFERENCE_FILE, root=data_dir))}
