"""The agent loop: repairs, error observations, AT2QA's fallbacks in compat mode, the step cap, logs, replay."""

from __future__ import annotations

import json

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


def test_tool_errors_and_unknown_tools_become_observations(tool):
    res = run_agent("q", Scripted([call('{"query": "x", "sort": "bogus"}'), call("{}", name="grep"),
                                   answer("<answer>y</answer>")]), tool)  # fmt: skip
    assert res.tool_errors == 2 and res.tool_calls == 2
    assert "unknown sort" in res.messages[3]["content"] and "only tool" in res.messages[5]["content"]


def test_an_empty_reply_is_nudged_once_per_turn(tool):
    res = run_agent("q", Scripted([answer(""), answer("<answer>Iran</answer>")]), tool)
    assert any(m.get("content") == EMPTY_REPLY_NUDGE for m in res.messages)
    assert res.answers == ["Iran"] and res.steps == 2


def test_the_step_cap_gives_a_flagged_best_effort_answer(tool):
    res = run_agent("q", Scripted([call('{"query": "visit China"}')]), tool, max_steps=3)
    assert res.hit_step_cap and res.best_effort and res.tool_calls == 3 and res.answers


def test_trajectories_round_trip_and_replay_identically(tool, tmp_path):
    runs = [run_agent("q", Scripted([call('{"query": "visit China", "sort": "time_asc"}'), answer("<answer>a</answer>")]),
                      tool, quid=7)]  # fmt: skip
    path = write_trajectories(tmp_path / "t.jsonl", runs)
    loaded = read_trajectories(path)
    assert loaded[0]["quid"] == 7 and loaded[0]["answers"] == ["a"]
    rows, details = replay_runs(loaded, tool)
    assert rows[0]["calls"] == 1 and rows[0]["same"] == 1 and details[0]["same"]
