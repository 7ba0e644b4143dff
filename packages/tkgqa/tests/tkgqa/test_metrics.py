"""Both Hits@1 rules: AT2QA's lenient substring match and the strict first-answer match."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tkgqa.metrics import breakdown, extract_answers, lenient_correct, split_answer_list, strict_correct

names = st.text(alphabet="abcdefgh ()", min_size=1, max_size=12).map(str.strip).filter(bool)


def test_lenient_credits_lists_substrings_and_coarser_times():
    assert lenient_correct("<answer>Iran, China</answer>", ["China"])
    assert lenient_correct("<answer>2015</answer>", ["2015-01"])
    assert lenient_correct("Perfect! <answer>Iran <answer>Muhammad VI</answer>", ["Muhammad VI"])
    assert not lenient_correct("<answer></answer>", ["China"])


def test_strict_takes_the_first_answer_and_truncates_time_to_the_gold():
    assert strict_correct("Citizen (North Korea)", ["citizen (north korea)"])
    assert strict_correct("Citizen_(North_Korea)", ["Citizen (North Korea)"])
    assert strict_correct("2015-01-05", ["2015-01"])
    assert not strict_correct("2015", ["2015-01"])
    assert not strict_correct("Iran", ["Iran (Ministry)"])


@given(st.lists(names, min_size=1, max_size=4), st.data())
def test_a_strict_hit_is_always_a_lenient_hit(gold, data):
    pred = data.draw(st.sampled_from(gold) | names)
    if strict_correct(pred, gold):
        assert lenient_correct(f"<answer>{pred}</answer>", gold)


@given(st.dates().map(lambda d: d.isoformat()), st.sampled_from([4, 7, 10]))
def test_a_finer_correct_date_is_a_strict_hit_at_any_coarser_gold(day, n):
    assert strict_correct(day, [day[:n]])


def test_answer_lists_split_outside_parentheses():
    assert split_answer_list("Iran, Armed Gang (Palestinian Territory, Occupied) and China") == [
        "Iran", "Armed Gang (Palestinian Territory, Occupied)", "China"]  # fmt: skip
    assert extract_answers("no tags") == ["no tags"]


def test_breakdown_has_an_all_row_then_one_row_per_value():
    rows = [{"k": "a", "m": 1}, {"k": "b", "m": 0}, {"k": "a", "m": 0}]
    table = breakdown(rows, ["k"], ["m"])
    assert table[0] == {"group": "all", "value": "all", "n": 3, "m": 1 / 3}
    assert [(r["value"], r["n"], r["m"]) for r in table[1:]] == [("a", 2, 0.5), ("b", 1, 0.0)]
