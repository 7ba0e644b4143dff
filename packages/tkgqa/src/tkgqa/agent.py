"""The agent loop: policy turns, ``vector_search`` calls, observations, ``<answer>`` tags, a step cap, a JSONL log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from effcore.errors import EffmlError
from tkgqa.metrics import extract_answers, split_answer_list
from tkgqa.search import SearchTool, ToolError

__all__ = [
    "EMPTY_REPLY_NUDGE",
    "AgentResult",
    "Policy",
    "PolicyError",
    "observe",
    "parse_arguments",
    "read_trajectories",
    "run_agent",
    "write_trajectories",
]

EMPTY_REPLY_NUDGE = "Your reply was empty. Provide the final answer inside <answer>...</answer> only."


class PolicyError(EffmlError):
    """The policy could not produce a turn (server unreachable, model failure)."""


class Policy(Protocol):
    """Produces the next assistant message (OpenAI chat format) from the conversation so far.

    The returned dict has ``role="assistant"`` and either ``tool_calls`` (``[{"id", "type": "function",
    "function": {"name", "arguments": <JSON string>}}]``) or ``content`` with the final answer.
    """

    name: str

    def start(self, question: str) -> list[dict[str, Any]]:
        """The initial messages (system prompt + question) for ``question``."""
        ...

    def next(self, messages: list[dict[str, Any]]) -> dict[str, Any]: ...


@dataclass(kw_only=True, slots=True)
class AgentResult:
    """One question's run: answers (best first), the raw final text, the counters and every message.

    At the step cap there is no answer (``answers`` empty, as in AT2QA, whose run then ends with
    "(no final answer)"); ``best_effort_answers`` keeps what the last observation suggests, reported
    beside the score, never in it.
    """

    quid: int | None
    question: str
    final_text: str
    answers: list[str]
    tool_calls: int = 0
    steps: int = 0
    hit_step_cap: bool = False
    best_effort_answers: list[str] = field(default_factory=list)
    repairs: int = 0
    tool_errors: int = 0
    seconds: float = 0.0
    policy: str = ""
    mode: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_arguments(raw: Any) -> tuple[dict[str, Any] | None, bool]:
    """Tool-call arguments as a dict, repairing common damage; returns ``(args or None, repaired)``.

    Repairs: code fences, single quotes, trailing commas, text around one JSON object.
    """
    if isinstance(raw, dict):
        return raw, False
    text = str(raw or "").strip()
    try:
        value = json.loads(text or "{}")
        return (value, False) if isinstance(value, dict) else (None, False)
    except json.JSONDecodeError:
        pass
    cand = text.strip("`")
    if cand.startswith("json"):
        cand = cand[4:]
    lo, hi = cand.find("{"), cand.rfind("}")
    if lo >= 0 and hi > lo:
        cand = cand[lo : hi + 1]
    no_commas = re.sub(r",\s*([}\]])", r"\1", cand)
    for attempt in (cand, cand.replace("'", '"'), no_commas, no_commas.replace("'", '"')):
        try:
            value = json.loads(attempt)
            if isinstance(value, dict):
                return value, True
        except json.JSONDecodeError:
            continue
    return None, False


def _best_effort(messages: list[dict[str, Any]]) -> list[str]:
    """At the step cap: the answer slots of the first fact in the last non-empty observation."""
    for msg in reversed(messages):
        if msg.get("role") != "tool":
            continue
        try:
            hits = json.loads(msg.get("content") or "[]")
        except json.JSONDecodeError:
            continue
        if isinstance(hits, list) and hits and isinstance(hits[0], dict) and "text" in hits[0]:
            head, _, tail, date = ([*hits[0]["text"].split("\t"), "", "", "", ""])[:4]
            return [tail.replace("_", " "), head.replace("_", " "), date]
    return []


def observe(tool: SearchTool, call: dict[str, Any], question: str) -> tuple[dict | None, Any, bool, bool]:
    """Run one tool call as the loop does: ``(arguments, observation, repaired, failed)``.

    Default mode: an unknown tool name, unparseable arguments or a refused call give an ``{"error"}``
    observation. Compat mode (AT2QA's code) runs ``vector_search`` whatever the name, and searches
    for the question when the arguments do not parse.
    """
    fn = call.get("function") or {}
    args, repaired = parse_arguments(fn.get("arguments"))
    if tool.mode == "compat":
        return (
            args,
            tool.call_json(args if args is not None else {"query": question}, question=question),
            repaired,
            False,
        )
    if fn.get("name") != "vector_search":
        return (
            args,
            {"error": f"unknown tool {fn.get('name')!r}; the only tool is vector_search"},
            repaired,
            True,
        )
    if args is None:
        return args, {"error": 'arguments are not a JSON object; send e.g. {"query": "..."}'}, repaired, True
    try:
        return args, tool.call_json(args, question=question), repaired, False
    except ToolError as err:
        return args, {"error": str(err)}, repaired, True


def run_agent(
    question: str,
    policy: Policy,
    tool: SearchTool,
    *,
    quid: int | None = None,
    max_steps: int = 20,
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
) -> AgentResult:
    """AT2QA's loop: up to ``max_steps`` assistant turns; tool calls run and return JSON observations.

    Malformed arguments are repaired when possible (counted); otherwise the call gets an error
    observation (default mode) or AT2QA's fallback ``{"query": question}`` (compat mode). A reply
    without ``<answer>`` text is nudged once per turn, as in AT2QA. When the turns run out there is
    no answer (AT2QA's "(no final answer)"); the last observation's best guess goes to
    ``best_effort_answers`` for reporting only.
    """
    if max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {max_steps}")
    t0 = time.perf_counter()
    messages = policy.start(question)
    res = AgentResult(
        quid=quid, question=question, final_text="", answers=[], policy=policy.name, mode=tool.mode
    )
    emit = on_event or (lambda kind, payload: None)
    for _ in range(max_steps):
        res.steps += 1
        msg = policy.next(messages)
        res.repairs += int(msg.pop("_repairs", 0) or 0)
        calls = msg.get("tool_calls") or []
        if calls:
            messages.append({"role": "assistant", "content": msg.get("content"), "tool_calls": calls})
            for call in calls:
                res.tool_calls += 1
                args, observation, repaired, failed = observe(tool, call, question)
                res.repairs += int(repaired)
                res.tool_errors += int(failed)
                emit("tool", {"arguments": args, "observation": observation})
                messages.append(
                    {"role": "tool", "tool_call_id": call.get("id", ""), "content": json.dumps(observation)}
                )
            continue
        content = msg.get("content") or ""
        answers = [a for a in extract_answers(content) if a.strip()]
        messages.append({"role": "assistant", "content": content})
        if not answers:
            messages.append({"role": "system", "content": EMPTY_REPLY_NUDGE})
            continue
        res.final_text = content
        res.answers = [item for a in answers for item in split_answer_list(a)] or answers
        emit("final", {"content": content})
        break
    else:
        res.hit_step_cap = True
        res.best_effort_answers = _best_effort(messages)
    res.messages = messages
    res.seconds = time.perf_counter() - t0
    return res


def write_trajectories(path: str | Path, results: list[AgentResult]) -> Path:
    """All runs as JSONL (one object per question), written atomically."""
    from effcore.io import atomic_write_text

    text = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results)
    return atomic_write_text(path, text)


def read_trajectories(path: str | Path) -> list[dict[str, Any]]:
    """Runs written by :func:`write_trajectories` (or a ``tkgqa eval --log`` file); one clear error for
    a missing, binary, empty or non-trajectory file."""
    path = Path(path)
    hint = "pass a log written by `tkgqa ask/eval --log FILE.jsonl`"
    if not path.is_file():
        raise EffmlError(f"trajectory file {path} not found", hint=hint)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise EffmlError(
            f"{path} is not UTF-8 text (byte {err.start}): not a trajectory log", hint=hint
        ) from None
    out = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            run = json.loads(line)
        except json.JSONDecodeError:
            raise EffmlError(f"{path}:{no}: not a JSON line", hint=hint) from None
        if not isinstance(run, dict) or not isinstance(run.get("messages"), list):
            raise EffmlError(f"{path}:{no}: not a trajectory (a JSON object with a messages list)", hint=hint)
        out.append(run)
    if not out:
        raise EffmlError(f"{path} holds no trajectories", hint=hint)
    return out
