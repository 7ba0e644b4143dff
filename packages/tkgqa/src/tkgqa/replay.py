"""Replay: re-run the tool calls of logged trajectories against a store and compare the observations."""

from __future__ import annotations

import json
from typing import Any

from tkgqa.agent import observe
from tkgqa.search import SearchTool

__all__ = ["replay_runs"]


def _lines(observation: Any) -> list[int] | str:
    if isinstance(observation, list):
        return [h.get("line_no") for h in observation if isinstance(h, dict)]
    if isinstance(observation, dict) and "error" in observation:
        return "error: " + str(observation["error"])
    return str(observation)


def _logged(raw: Any) -> list[int] | str:
    if not raw:
        return "missing"
    try:
        return _lines(json.loads(raw))
    except (TypeError, json.JSONDecodeError):
        return "unreadable: " + str(raw)[:60]


def replay_runs(runs: list[dict[str, Any]], tool: SearchTool) -> tuple[list[dict], list[dict]]:
    """Per question ``{quid, calls, same, differ}`` rows and per call details (logged vs now line numbers).

    Each call is re-run exactly as the agent loop ran it (:func:`tkgqa.agent.observe`).
    """
    rows, details = [], []
    for run in runs:
        msgs = [m for m in run.get("messages", []) if isinstance(m, dict)]
        question = str(run.get("question") or "")
        observations = {m.get("tool_call_id"): m.get("content") for m in msgs if m.get("role") == "tool"}
        same = differ = 0
        for m in msgs:
            for call in m.get("tool_calls") or []:
                args, observation, _, _ = observe(tool, call, question)
                logged, now = _logged(observations.get(call.get("id"))), _lines(observation)
                ok = logged == now
                same += ok
                differ += not ok
                details.append(
                    {"quid": run.get("quid"), "arguments": args, "logged": logged, "now": now, "same": ok}
                )
        rows.append({"quid": run.get("quid"), "question": question[:60], "calls": same + differ,
                     "same": same, "differ": differ, "answer": ", ".join(run.get("answers") or [])[:40]})  # fmt: skip
    return rows, details
