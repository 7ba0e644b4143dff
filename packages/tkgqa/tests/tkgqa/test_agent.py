"""The agent loop: repairs, error observations, AT2QA's fallbacks in compat mode, the step cap, logs, replay."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.agent import EMPTY_REPLY_NUDGE, parse_arguments, read_trajectories, run_agent, write_trajectories
from tkgqa.replay import replay_runs
from tkgqa.search import SearchTool


class Scripted:
    """A policy that replies with a fixed list of assistant messages (then repeats the last)."""

    name = "scripted"

    def __init__(self, replies):
        self.replies, self.i = replies, 0

    def start(self, question):
        return [{"role": "system", "content": "test"}, {"role": "user", "content": question}]

    def next(self, messages):
        reply = self.replies[min(self.i, len(self.replies) - 1)]
        self.i += 1
        return dict(reply)


def call(arguments, name="vector_search"):
    return {"role": "assistant", "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}]}  # fmt: skip


def answer(text):
    return {"role": "assistant", "content": text}


@given(st.dictionaries(st.sampled_from(["query", "sort", "start_date"]), st.text(max_size=10), min_size=1))
def test_argument_parsing_round_trips_json_and_repairs_fences(args):
    assert parse_arguments(json.dumps(args)) == (args, False)
    assert parse_arguments("```json\n" + json.dumps(args) + "\n```") == (args, True)


def test_malformed_arguments_are_repaired_and_counted(tool):
    res = run_agent(
        "q", Scripted([call("{'query': 'visit China',}"), answer("<answer>China</answer>")]), tool
    )
    assert res.repairs == 1 and res.tool_errors == 0 and res.answers == ["China"]


def test_unrepairable_arguments_get_an_error_in_default_mode_and_the_question_in_compat(bench, hash_index):
    enc, idx = hash_index
    replies = [call("not json at all"), answer("<answer>x</answer>")]
    default = run_agent("Who visited China?", Scripted(replies), SearchTool(bench.store, idx, enc))
    assert default.tool_errors == 1 and "error" in json.loads(default.messages[3]["content"])
    compat = run_agent(
        "Who visited China?", Scripted(replies), SearchTool(bench.store, idx, enc, mode="compat")
    )
    assert compat.tool_errors == 0 and len(json.loads(compat.messages[3]["content"])) == 10


def test_compat_runs_vector_search_for_any_tool_name_and_a_call_without_query(bench, hash_index):
    enc, idx = hash_index
    tool = SearchTool(bench.store, idx, enc, mode="compat")
    res = run_agent("Who visited China?", Scripted([call('{"sort": "time_asc"}', name="grep"),
                                                   answer("<answer>x</answer>")]), tool)  # fmt: skip
    # AT2QA never checks the function name, and searches for the question when "query" is missing.
    expected = tool.call_json({"query": "Who visited China?", "sort": "time_asc"})
    assert res.tool_errors == 0 and json.loads(res.messages[3]["content"]) == expected


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"\x89PNG\r\n\x1a\n\x00\xff", "not UTF-8"), (b"[1, 2]\n", "not a trajectory"), (b"{oops\n", "not a JSON line"),
     (b"\n\n", "holds no trajectories")],
)  # fmt: skip
def test_a_log_that_is_not_a_trajectory_log_is_one_clear_error(tmp_path, content, match):
    from effcore.errors import EffmlError

    path = tmp_path / "x.jsonl"
    path.write_bytes(content)
    with pytest.raises(EffmlError, match=match):
        read_trajectories(path)


def test_tool_errors_and_unknown_tools_become_observations(tool):
    res = run_agent("q", Scripted([call('{"query": "x", "sort": "bogus"}'), call("{}", name="grep"),
                                   answer("<answer>y</answer>")]), tool)  # fmt: skip
    assert res.tool_errors == 2 and res.tool_calls == 2
    assert "unknown sort" in res.messages[3]["content"] and "only tool" in res.messages[5]["content"]


def test_an_empty_reply_is_nudged_once_per_turn(tool):
    res = run_agent("q", Scripted([answer(""), answer("<answer>Iran</answer>")]), tool)
    assert any(m.get("content") == EMPTY_REPLY_NUDGE for m in res.messages)
    assert res.answers == ["Iran"] and res.steps == 2


def test_the_step_cap_counts_turns_and_leaves_no_answer_as_at2qa(tool):
    # Two calls per turn: AT2QA caps assistant turns, not tool calls.
    two = {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"c{i}", "type": "function", "function": {"name": "vector_search", "arguments": '{"query": "visit China"}'}}
        for i in range(2)]}  # fmt: skip
    res = run_agent("q", Scripted([two]), tool, max_steps=3)
    assert res.hit_step_cap and res.steps == 3 and res.tool_calls == 6
    # No answer is scored (AT2QA's "(no final answer)"); the last observation's guess is kept apart.
    assert res.answers == [] and res.final_text == "" and res.best_effort_answers


def test_a_turn_cap_below_one_is_refused(tool):
    with pytest.raises(ValueError, match="max_steps"):
        run_agent("q", Scripted([answer("<answer>a</answer>")]), tool, max_steps=0)


def test_trajectories_round_trip_and_replay_identically(tool, tmp_path):
    runs = [run_agent("q", Scripted([call('{"query": "visit China", "sort": "time_asc"}'), answer("<answer>a</answer>")]),
                      tool, quid=7)]  # fmt: skip
    path = write_trajectories(tmp_path / "t.jsonl", runs)
    loaded = read_trajectories(path)
    assert loaded[0]["quid"] == 7 and loaded[0]["answers"] == ["a"]
    rows, details = replay_runs(loaded, tool)
    assert rows[0]["calls"] == 1 and rows[0]["same"] == 1 and details[0]["same"]
