"""Training questions generated from a KG with MultiTQ's six templates, each with the facts that support it."""

from __future__ import annotations

import calendar
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from effcore.errors import ConfigError
from tkgqa.names import kg_to_answer
from tkgqa.questions import MULTIPLE, QTYPES, Question
from tkgqa.store import TemporalKG, day_to_iso, iso_to_day
from tkgqa.synthetic import RELATION_VERBS

__all__ = [
    "GenQuestion",
    "LeakKey",
    "generate_questions",
    "read_questions",
    "relation_phrases",
    "write_questions",
]

LeakKey = tuple[int, int, tuple[int, int] | None]
"""(entity id, relation id, time period in days or None): what a question asks about, for the leak filter."""

_IRREGULAR = {"make": "made", "give": "gave", "bring": "brought", "meet": "met", "send": "sent", "say": "said",
              "fight": "fought", "hold": "held", "seek": "sought", "take": "took", "sign": "signed",
              "find": "found", "begin": "began", "put": "put", "cut": "cut", "set": "set"}  # fmt: skip


def relation_phrases(relation: str) -> tuple[str, str]:
    """``(base, past)`` wording of a relation: the synthetic KG's verbs, else its name with the verb put in the past."""
    if relation in RELATION_VERBS:
        return RELATION_VERBS[relation]
    words = kg_to_answer(relation).lower().split()
    if not words:
        return relation, relation
    v, tail = words[0].rstrip(",;:"), words[0][len(words[0].rstrip(",;:")) :]
    if v in _IRREGULAR:
        past = _IRREGULAR[v]
    elif v.endswith("e"):
        past = v + "d"
    elif v.endswith("y") and len(v) > 1 and v[-2] not in "aeiou":
        past = v[:-1] + "ied"
    else:
        past = v + "ed"
    return " ".join(words), " ".join([past + tail, *words[1:]])


@dataclass(kw_only=True, slots=True)
class GenQuestion:
    """A generated question, the KG rows that support its answers, and its leak keys."""

    question: Question
    rows: list[int]
    keys: list[LeakKey]


def _period(day: int, level: str) -> tuple[int, int]:
    y, m, _ = (int(x) for x in day_to_iso(day).split("-"))
    if level == "day":
        return day, day
    if level == "month":
        return iso_to_day(f"{y:04d}-{m:02d}-01"), iso_to_day(
            f"{y:04d}-{m:02d}-{calendar.monthrange(y, m)[1]:02d}"
        )
    return iso_to_day(f"{y:04d}-01-01"), iso_to_day(f"{y:04d}-12-31")


def _say(day: int, level: str) -> str:
    y, m, d = (int(x) for x in day_to_iso(day).split("-"))
    return {"day": f"{d} {calendar.month_name[m]} {y}", "month": f"{calendar.month_name[m]} {y}",
            "year": f"the year {y}"}[level]  # fmt: skip


class _Index:
    """Facts grouped by (head, relation) and (relation, tail), each group sorted by day: (day, other, row)."""

    def __init__(self, kg: TemporalKG) -> None:
        self.kg = kg
        self.by_hr: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        self.by_rt: dict[tuple[int, int], list[tuple[int, int, int]]] = defaultdict(list)
        for i, (h, r, t, d) in enumerate(zip(kg.head.tolist(), kg.rel.tolist(), kg.tail.tolist(), kg.day.tolist(),
                                             strict=True)):  # fmt: skip
            self.by_hr[(h, r)].append((d, t, i))
            self.by_rt[(r, t)].append((d, h, i))
        for groups in (self.by_hr, self.by_rt):
            for v in groups.values():
                v.sort()
        self.hr_keys = sorted(k for k, v in self.by_hr.items() if len(v) >= 3)
        self.rt_keys = sorted(k for k, v in self.by_rt.items() if len(v) >= 3)

    def name(self, e: int) -> str:
        return kg_to_answer(self.kg.entities.names[e])


def _answers(ix: _Index, picked: list[tuple[int, int, int]]) -> tuple[list[str], list[int]]:
    return sorted({ix.name(o) for _, o, _ in picked}), sorted({row for _, _, row in picked})


def _make(ix: _Index, rng: random.Random, qtype: str):
    """One question of ``qtype`` or None when the drawn group cannot carry it: (text, answers, type, level, rows, keys)."""
    if qtype in ("equal", "before_after"):
        h, r = rng.choice(ix.hr_keys)
        group, H = ix.by_hr[(h, r)], ix.name(h)
        base, _past = relation_phrases(ix.kg.relations.names[r])
        d, t, _ = rng.choice(group)
        level = rng.choice(("day", "month", "year"))
        lo, hi = _period(d, level)
        if qtype == "equal" and rng.random() < 0.3:  # a time question: when did H do r to T
            picked = [g for g in group if g[1] == t]
            years = sorted({day_to_iso(x)[:4] for x, _, _ in picked})
            text = f"In which year did {H} {base} {ix.name(t)}?"
            return text, years, "time", "year", sorted(p[2] for p in picked), [(h, r, None), (t, r, None)]
        if qtype == "equal":
            picked = [g for g in group if lo <= g[0] <= hi]
            text = f"Who did {H} {base} {'on' if level == 'day' else 'in'} {_say(d, level)}?"
        else:
            after = rng.random() < 0.5
            picked = [g for g in group if (g[0] > hi if after else g[0] < lo)]
            text = f"Who did {H} {base} {'after' if after else 'before'} {_say(d, level)}?"
        if not picked:
            return None
        answers, rows = _answers(ix, picked)
        return text, answers, "entity", level, rows, [(h, r, (lo, hi))]
    r, t = rng.choice(ix.rt_keys)
    group, T = ix.by_rt[(r, t)], ix.name(t)
    base, past = relation_phrases(ix.kg.relations.names[r])
    if qtype == "first_last":
        first = rng.random() < 0.5
        pick = group[0][0] if first else group[-1][0]
        answers, rows = _answers(ix, [g for g in group if g[0] == pick])
        return (
            f"Who was the {'first' if first else 'last'} to {base} {T}?",
            answers,
            "entity",
            "day",
            rows,
            [(t, r, None)],
        )
    _, x, _ = rng.choice(group[1:-1])
    ref = min(g[0] for g in group if g[1] == x)  # the reference event is X's first such fact
    X = ix.name(x)
    keys = [(t, r, None), (x, r, None)]
    if qtype == "equal_multi":
        lo, hi = _period(ref, "month")
        picked = [g for g in group if lo <= g[0] <= hi and g[1] != x]
        text, level = f"Who {past} {T} in the same month as {X}?", "month"
    elif qtype == "after_first":
        later = [g for g in group if g[0] > ref and g[1] != x]
        picked = [g for g in later if g[0] == later[0][0]] if later else []
        text, level = f"After {X}, who was the first to {base} {T}?", "day"
    else:
        earlier = [g for g in group if g[0] < ref and g[1] != x]
        picked = [g for g in earlier if g[0] == earlier[-1][0]] if earlier else []
        text, level = f"Before {X}, who was the last to {base} {T}?", "day"
    if not picked:
        return None
    answers, rows = _answers(ix, picked)
    ref_rows = [g[2] for g in group if g[1] == x and g[0] == ref]
    return text, answers, "entity", level, sorted(set(rows) | set(ref_rows)), keys


def generate_questions(kg: TemporalKG, n: int, *, seed: int = 0, max_answers: int = 10) -> list[GenQuestion]:
    """``n`` questions, the six qtypes in turn, deterministic for a seed; at most ``max_answers`` answers each.

    Answers follow the README's semantics (first event of a reference entity, periods inclusive); each
    question carries the rows that support it (gold subgraph) and its (entity, relation, time) keys.
    """
    if n < 1:
        raise ConfigError(f"the number of questions must be >= 1, got {n}")
    ix = _Index(kg)
    if not ix.hr_keys or not ix.rt_keys:
        raise ConfigError(f"{kg.source}: no (entity, relation) pair has 3 facts; no template question can be made",
                          hint="use a larger KG")  # fmt: skip
    rng = random.Random(seed)
    out: list[GenQuestion] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        qtype = QTYPES[len(out) % len(QTYPES)]
        made = _make(ix, rng, qtype)
        if made is None or made[0] in seen or len(made[1]) > max_answers:
            continue
        text, answers, atype, level, rows, keys = made
        seen.add(text)
        q = Question(quid=-(len(out) + 1), question=text, answers=answers, answer_type=atype, split="generated",
                     qtype=qtype, time_level=level, qlabel="Multiple" if qtype in MULTIPLE else "Single",
                     meta_source="generated")  # fmt: skip
        out.append(GenQuestion(question=q, rows=rows, keys=keys))
    if len(out) < n:
        raise ConfigError(f"{kg.source}: only {len(out)} distinct questions in {tries} tries, {n} asked",
                          hint="ask for fewer questions")  # fmt: skip
    return out


def write_questions(path: Path, questions: list[GenQuestion], kg: TemporalKG) -> None:
    """JSONL: a header line with the KG's digest, then one question per line with its rows and keys; atomic."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(
            json.dumps({"kg_digest": kg.digest, "kg_source": kg.source, "questions": len(questions)}) + "\n"
        )
        for g in questions:
            fh.write(json.dumps({**g.question.to_dict(), "rows": g.rows, "keys": g.keys}) + "\n")
    tmp.replace(path)


def read_questions(path: Path, kg: TemporalKG) -> list[GenQuestion]:
    """Questions written by :func:`write_questions` for this KG; another KG's file is a clear error."""
    hint = "write one: tkgqa gen-questions --kg KG --questions-out q.jsonl"
    if not Path(path).is_file():
        raise ConfigError(f"questions file {path} does not exist", hint=hint)
    with open(path, encoding="utf-8") as fh:
        try:
            head = json.loads(fh.readline())
            items = [json.loads(line) for line in fh if line.strip()]
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ConfigError(f"{path} is not a generated-questions file (JSONL)", hint=hint) from None
    if not isinstance(head, dict) or "kg_digest" not in head:
        raise ConfigError(f"{path} is not a generated-questions file (no header line)", hint=hint)
    if head["kg_digest"] != kg.digest:
        raise ConfigError(f"{path} was generated from another KG ({head.get('kg_source')}), not {kg.source}",
                          hint=hint)  # fmt: skip
    if not items:
        raise ConfigError(f"{path} holds no questions", hint=hint)
    out = []
    for it in items:
        rows, keys = it.pop("rows"), it.pop("keys")
        out.append(GenQuestion(question=Question(**it), rows=rows,
                               keys=[(e, r, None if p is None else tuple(p)) for e, r, p in keys]))  # fmt: skip
    return out
