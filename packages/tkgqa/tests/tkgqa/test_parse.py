"""Question parsing: every date form MultiTQ uses, answer kind and granularity, first/last, same-period cues."""

from __future__ import annotations

import calendar
import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.parse import parse_dates, parse_question
from tkgqa.store import iso_to_day

dates = st.dates(min_value=dt.date(2005, 1, 1), max_value=dt.date(2015, 12, 31))


@given(
    dates,
    st.sampled_from(
        ["{d} {M} {y}", "{M} {d}, {y}", "{d}th of {M}, {y}", "{y}-{m:02d}-{d:02d}", "{d}.{m:02d}.{y}"]
    ),
)
def test_day_dates_parse_to_that_day(date, form):
    text = (
        "Who visited China on "
        + form.format(d=date.day, M=calendar.month_name[date.month], y=date.year, m=date.month)
        + "?"
    )
    (found,) = parse_dates(text)
    assert (found.level, found.start, found.end) == (
        "day",
        iso_to_day(date.isoformat()),
        iso_to_day(date.isoformat()),
    )


@given(dates)
def test_month_dates_cover_the_whole_month(date):
    (found,) = parse_dates(f"Who praised Iraq in {calendar.month_abbr[date.month]}, the year {date.year}?")
    last = calendar.monthrange(date.year, date.month)[1]
    assert found.level == "month"
    assert (found.start, found.end) == (
        iso_to_day(date.replace(day=1).isoformat()),
        iso_to_day(date.replace(day=last).isoformat()),
    )


def test_before_and_after_attach_to_the_date():
    assert parse_dates("Who praised Ethiopia before 2007?")[0].relation == "before"
    assert parse_dates("After 9 July 2008, which country did Iraq praise?")[0].relation == "after"
    assert parse_dates("Who visited China in 2009?")[0].relation == "on"


@pytest.mark.parametrize(
    ("question", "answer", "granularity", "order"),
    [("When did Islam Karimov last praise Malaysia?", "time", "day", "last"),
     ("In what year did Donald Rumsfeld last praise China?", "time", "year", "last"),
     ("Can you tell me the exact month in which South Sudan last negotiated with Ethiopia?", "time", "month", "last"),
     ("After Burundi, who was the first to speak negatively about Ethiopia?", "entity", "day", "first"),
     ("Which country received the visit from China on the same month of Shura Council?", "entity", "day", None)],
)  # fmt: skip
def test_answer_kind_granularity_and_order(question, answer, granularity, order):
    p = parse_question(question)
    assert (p.answer, p.granularity, p.order) == (answer, granularity, order)


def test_same_period_cue_and_date_placeholder():
    p = parse_question("Who praised the United Arab Emirates in the same month as Iran?")
    assert p.same == "month"
    assert "zzdate" in parse_question("Who visited China on 8 May 2013?").clean
