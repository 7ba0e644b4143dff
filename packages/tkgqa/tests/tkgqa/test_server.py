"""The OpenAI-compatible HTTP path end to end: server, client, agent; tool calls parsed from model text."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tkgqa.agent import PolicyError, run_agent
from tkgqa.llm import parse_tool_call, to_plain_messages, trim_turn
from tkgqa.policies import OpenAIChatPolicy
from tkgqa.server import serve_in_thread

args_st = st.dictionaries(
    st.sampled_from(["query", "sort", "entity_filter_name"]), st.text(max_size=12), min_size=1
)


class TextModel:
    """A backend that 'generates' text like a small LLM: first a JSON tool call, then an answer."""

    def __init__(self):
        self.seen = []

    def __call__(self, messages, tools):
        self.seen.append(messages)
        if not any(m.get("role") == "tool" for m in messages):
            text = (
                'Sure! {"name": "vector_search", "arguments": {"query": "visit China", "sort": "time_asc"}}'
            )
        else:
            text = (
                "<answer>"
                + json.loads(messages[-1]["content"])[0]["text"].split("\t")[0].replace("_", " ")
                + "</answer>"
            )
        call = parse_tool_call(text)
        if call is None:
            return {"role": "assistant", "content": text}
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": call[0], "arguments": json.dumps(call[1])}}]}  # fmt: skip


@pytest.fixture
def server():
    backend = TextModel()
    srv, url = serve_in_thread(backend, model_name="fake")
    yield backend, url
    srv.shutdown()


def test_agent_runs_over_http_against_the_local_server(server, tool):
    backend, url = server
    res = run_agent(
        "Who visited China first?", OpenAIChatPolicy(base_url=url, model="fake", timeout=10), tool
    )
    assert res.tool_calls == 1 and res.answers and not res.hit_step_cap
    assert backend.seen[0][0]["role"] == "system" and "vector_search" in backend.seen[0][0]["content"]


def test_models_route_and_bad_requests(server):
    _, url = server
    with urllib.request.urlopen(url + "/models", timeout=5) as resp:
        assert json.loads(resp.read())["data"][0]["id"] == "fake"
    req = urllib.request.Request(url + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 400


def test_an_unreachable_server_is_one_clear_error_naming_the_url():
    t0 = time.perf_counter()
    policy = OpenAIChatPolicy(base_url="http://127.0.0.1:9/v1", timeout=2)
    with pytest.raises(PolicyError, match=r"cannot reach the LLM server at http://127.0.0.1:9/v1") as err:
        policy.next(policy.start("q"))
    assert "tkgqa serve-llm" in str(err.value) and time.perf_counter() - t0 < 5


@given(args_st, st.sampled_from(["{}", "```json\n{}\n```", "I will search. {}", "{} Let me check."]))
def test_tool_calls_are_found_in_model_text(args, frame):
    blob = json.dumps({"name": "vector_search", "arguments": args})
    name, parsed, _ = parse_tool_call(frame.format(blob) if "{}" in frame else blob)
    assert name == "vector_search" and parsed == args


def test_single_quotes_and_string_arguments_are_repaired():
    name, args, repaired = parse_tool_call("{'name': 'vector_search', 'arguments': {'query': 'Iran'}}")
    assert (name, args, repaired) == ("vector_search", {"query": "Iran"}, True)
    assert parse_tool_call('{"name": "vector_search", "arguments": "{\\"query\\": \\"x\\"}"}')[1] == {
        "query": "x"
    }
    assert parse_tool_call("<answer>Iran</answer>") is None


def test_tool_turns_become_plain_text_turns():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "function": {"name": "vector_search", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "1", "content": "[]"}, {"role": "system", "content": "nudge"}]  # fmt: skip
    plain = to_plain_messages(msgs)
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user", "user"]
    assert plain[3]["content"].startswith("Observation:")


def test_a_reply_stops_at_the_first_turn_marker():
    assert trim_turn(" In 2005.<|im_end|>\n<|im_start|>user\nmore") == "In 2005."
    assert trim_turn("<answer>Iran</answer>") == "<answer>Iran</answer>"


class Scripted:
    """A raw HTTP server answering POSTs with scripted bodies, recording each request's headers."""

    def __init__(self, bodies):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.bodies, self.headers = list(bodies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                return

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.headers.append(dict(self.headers))
                body = outer.bodies.pop(0)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        import threading

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


def _completion(message) -> bytes:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": "stop", "message": message}]}).encode()  # fmt: skip


MALFORMED = [b"{not json", b'{"choices": []}', _completion("just text")]


def test_malformed_responses_are_asked_again_and_counted_as_repairs():
    srv = Scripted([*MALFORMED, _completion({"role": "assistant", "content": "<answer>A</answer>"})])
    try:
        policy = OpenAIChatPolicy(base_url=srv.url, timeout=5, retries=3)
        assert policy.next(policy.start("q")) == {
            "role": "assistant",
            "content": "<answer>A</answer>",
            "_repairs": 3,
        }
        srv.bodies = list(MALFORMED)
        policy = OpenAIChatPolicy(base_url=srv.url, timeout=5, retries=2)
        with pytest.raises(PolicyError, match="sent 3 malformed responses in a row"):
            policy.next(policy.start("q"))
    finally:
        srv.server.shutdown()


def test_tool_calls_come_back_as_plain_dicts_with_the_server_s_repair_count():
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "vector_search", "arguments": '{"query": "x"}'},
    }
    srv = Scripted(
        [_completion({"role": "assistant", "content": None, "tool_calls": [call], "tkgqa_repairs": 1})] * 2
    )
    try:
        policy = OpenAIChatPolicy(base_url=srv.url, timeout=5)
        assert policy.next(policy.start("q")) == {"role": "assistant", "content": None, "_repairs": 1,
                                                  "tool_calls": [call]}  # fmt: skip
        keyed = OpenAIChatPolicy(base_url=srv.url, timeout=5, api_key="sk-test")
        keyed.next(keyed.start("q"))
    finally:
        srv.server.shutdown()
    # no key, no Authorization header (as the urllib client did); a key goes out as a bearer token
    assert "Authorization" not in srv.headers[0] and srv.headers[1]["Authorization"] == "Bearer sk-test"


def test_a_server_error_is_retried_then_one_line_naming_the_status():
    calls = []

    def failing(messages, tools):
        calls.append(1)
        raise RuntimeError("out of memory")

    srv, url = serve_in_thread(failing, model_name="fake")
    try:
        policy = OpenAIChatPolicy(base_url=url, timeout=5, retries=1)
        with pytest.raises(
            PolicyError, match=r"answered HTTP 500: .*generation failed: RuntimeError: out of memory"
        ):
            policy.next(policy.start("q"))
    finally:
        srv.shutdown()
    assert len(calls) == 2  # the library's retry


def test_a_server_slower_than_the_timeout_is_one_line():
    def slow(messages, tools):
        time.sleep(1.5)
        return {"role": "assistant", "content": "late"}

    srv, url = serve_in_thread(slow, model_name="fake")
    try:
        t0 = time.perf_counter()
        policy = OpenAIChatPolicy(base_url=url, timeout=0.3, retries=0)
        with pytest.raises(PolicyError, match=r"did not answer within 0.3 s \(attempts: 1\)"):
            policy.next(policy.start("q"))
        assert time.perf_counter() - t0 < 1.4
    finally:
        srv.shutdown()
