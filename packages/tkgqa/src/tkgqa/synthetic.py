"""A synthetic MultiTQ: a random TKG with CAMEO-like relations and template questions of the six qtypes."""

from __future__ import annotations

import calendar
import random
from collections import defaultdict
from dataclasses import dataclass

from tkgqa.names import kg_to_answer
from tkgqa.questions import MULTIPLE, Question
from tkgqa.store import TemporalKG, day_to_iso, iso_to_day

__all__ = ["RELATION_VERBS", "SyntheticBenchmark", "make_benchmark", "write_large_tsv"]

# relation -> (base form, past form) as MultiTQ-style questions word them.
RELATION_VERBS = {
    "Make_a_visit": ("visit", "visited"),
    "Praise_or_endorse": ("praise", "praised"),
    "Criticize_or_denounce": ("criticise", "criticised"),
    "Sign_formal_agreement": ("sign a formal agreement with", "signed a formal agreement with"),
    "Accuse": ("accuse", "accused"),
    "Make_an_appeal_or_request": ("make an appeal to", "made an appeal to"),
    "Express_intent_to_meet_or_negotiate": (
        "express the intention to negotiate with",
        "wanted to negotiate with",
    ),
    "Threaten": ("threaten", "threatened"),
}
_COUNTRIES = ("China", "Iraq", "Thailand", "Japan", "Kuwait", "Malaysia", "Ethiopia", "Cambodia", "France",
              "Iran", "Vietnam", "Oman", "Djibouti", "Burundi", "Kenya", "Peru")  # fmt: skip
_PEOPLE = ("Arlo Venn", "Mira Castell", "Tobias Okonkwo", "Lena Vasquez", "Ravi Menon", "Hana Sato",
           "Omar Haddad", "Ines Duarte", "Piet de Wit", "Yara Nasser", "Jon Ekberg", "Sofia Lind")  # fmt: skip
_ROLES = ("Citizen", "Ministry", "Police", "Government", "Armed Gang")


@dataclass(kw_only=True, slots=True)
class SyntheticBenchmark:
    """A synthetic KG, its facts as TSV text (for loaders) and questions with gold answers."""

    store: TemporalKG
    tsv: str
    questions: list[Question]


def _names(rng: random.Random, n_roles: int) -> list[str]:
    ents = [c.replace(" ", "_") for c in _COUNTRIES] + [p.replace(" ", "_") for p in _PEOPLE]
    for c in _COUNTRIES[:n_roles]:
        for r in _ROLES:
            ents.append(f"{r.replace(' ', '_')}_({c})")
    return ents


def _fmt_day(day: int) -> str:
    y, m, d = (int(x) for x in day_to_iso(day).split("-"))
    return f"{d} {calendar.month_name[m]} {y}"


def _fmt_month(day: int) -> str:
    y, m, _ = (int(x) for x in day_to_iso(day).split("-"))
    return f"{calendar.month_name[m]} {y}"


def make_benchmark(
    *, seed: int = 0, n_facts: int = 1500, n_questions: int = 120, n_roles: int = 4
) -> SyntheticBenchmark:
    """A deterministic synthetic benchmark; gold answers follow the semantics in the README (first event)."""
    rng = random.Random(seed)
    ents = _names(rng, n_roles)
    rels = list(RELATION_VERBS)
    lo, hi = iso_to_day("2005-01-01"), iso_to_day("2015-12-31")
    seen, quads = set(), []
    while len(quads) < n_facts:
        h, t = rng.sample(ents, 2)
        f = (h, rng.choice(rels), t, day_to_iso(rng.randint(lo, hi)))
        if f not in seen:
            seen.add(f)
            quads.append(f)
    quads.sort(key=lambda q: q[3])
    store = TemporalKG.from_quads(quads, source="synthetic", digest=f"synthetic-{seed}-{n_facts}-{n_roles}")
    tsv = "line\thead\trelation\ttail\tdate\n" + "".join(
        f"{i + 1}\t{h}\t{r}\t{t}\t{d}\n" for i, (h, r, t, d) in enumerate(quads)
    )
    by_rt: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    by_hrt: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for h, r, t, d in quads:
        by_rt[(r, t)].append((iso_to_day(d), h))
        by_hrt[(h, r, t)].append(iso_to_day(d))
    keys = sorted(k for k, v in by_rt.items() if len(v) >= 3)
    questions: list[Question] = []
    qtypes = ("equal", "before_after", "first_last", "equal_multi", "after_first", "before_last")
    tries = 0
    while len(questions) < n_questions and tries < 50 * n_questions:
        tries += 1
        qtype = qtypes[len(questions) % len(qtypes)]
        r, t = rng.choice(keys)
        events = sorted(by_rt[(r, t)])
        base, past = RELATION_VERBS[r]
        T = kg_to_answer(t)
        q = _question(rng, qtype, events, base, past, T, r, t, by_hrt)
        if q is not None:
            text, answers, atype, level = q
            questions.append(Question(quid=900000 + len(questions), question=text, answers=answers, answer_type=atype,
                                      split="dev", qtype=qtype, time_level=level,
                                      qlabel="Multiple" if qtype in MULTIPLE else "Single", meta_source="labelled"))  # fmt: skip
    return SyntheticBenchmark(store=store, tsv=tsv, questions=questions)


def _question(rng, qtype, events, base, past, T, r, t, by_hrt):
    days = [d for d, _ in events]
    if qtype == "equal":
        d, h = rng.choice(events)
        if rng.random() < 0.5:
            return (
                f"Who {past} {T} on {_fmt_day(d)}?",
                sorted({kg_to_answer(x) for e, x in events if e == d}),
                "entity",
                "day",
            )
        years = sorted({day_to_iso(e)[:4] for e in by_hrt[(h, r, t)]})
        return f"In which year did {kg_to_answer(h)} {base} {T}?", years, "time", "year"
    if qtype == "before_after":
        d = rng.choice(days[1:-1])
        after = sorted({kg_to_answer(x) for e, x in events if e > d})
        return (f"Who {past} {T} after {_fmt_day(d)}?", after, "entity", "day") if after else None
    if qtype == "first_last":
        first = rng.random() < 0.5
        pick = days[0] if first else days[-1]
        ans = sorted({kg_to_answer(x) for e, x in events if e == pick})
        return f"Who was the {'first' if first else 'last'} to {base} {T}?", ans, "entity", "day"
    _d_ref, X = rng.choice(events[1:-1])
    ref = min(by_hrt[(X, r, t)])  # the reference event is X's first such fact
    XN = kg_to_answer(X)
    if qtype == "equal_multi":
        key = day_to_iso(ref)[:7]
        ans = sorted({kg_to_answer(x) for e, x in events if day_to_iso(e)[:7] == key and x != X})
        return (f"Who {past} {T} in the same month as {XN}?", ans, "entity", "month") if ans else None
    if qtype == "after_first":
        later = [(e, x) for e, x in events if e > ref and x != X]
        if not later:
            return None
        ans = sorted({kg_to_answer(x) for e, x in later if e == later[0][0]})
        return f"After {XN}, who was the first to {base} {T}?", ans, "entity", "day"
    earlier = [(e, x) for e, x in events if e < ref and x != X]
    if not earlier:
        return None
    ans = sorted({kg_to_answer(x) for e, x in earlier if e == earlier[-1][0]})
    return f"Before {XN}, who was the last to {base} {T}?", ans, "entity", "day"


def write_large_tsv(path, facts: int, *, entities: int | None = None, relations: int = 240, days: int = 7_300,
                    seed: int = 0, chunk: int = 500_000) -> None:  # fmt: skip
    """Write a synthetic temporal KG of ``facts`` lines to ``path`` chunk by chunk (bounded memory).

    Entities (``facts // 20`` by default, ``Entity_<i>``) are drawn with a heavy tail (a few hubs, as
    the countries of ICEWS), relations (``Relation_<j>``, 240 like MultiTQ's) likewise, days uniformly
    over ``days`` days from 2000-01-01. A header line names the columns.
    """
    import numpy as np

    entities = entities or max(facts // 20, 10)
    rng = np.random.default_rng(seed)
    base = iso_to_day("2000-01-01")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("head\trelation\ttail\tdate\n")
        for lo in range(0, facts, chunk):
            n = min(chunk, facts - lo)
            head = (entities * rng.random(n) ** 3).astype(
                np.int64
            )  # density ~ x^(-2/3): hubs and a long tail
            tail = (entities * rng.random(n) ** 3).astype(np.int64)
            rel = (relations * rng.random(n) ** 2).astype(np.int64)
            dates = (np.datetime64(int(base), "D") + rng.integers(0, days, n)).astype(str)
            fh.writelines(f"Entity_{h}\tRelation_{r}\tEntity_{t}\t{d}\n"
                          for h, r, t, d in zip(head.tolist(), rel.tolist(), tail.tolist(), dates.tolist(), strict=True))  # fmt: skip
