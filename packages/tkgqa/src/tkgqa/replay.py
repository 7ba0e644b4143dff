"""Replay: re-run the tool calls of logged trajectories against a store and compare the observations."""

from __future__ import annotations

import json
from typing import Any

from tkgqa.agent import parse_arguments
from tkgqa.search import SearchTool, ToolError

__all__ = ["replay_runs"]


def _lines(observation: Any) -> list[int] | str:
    if isinstance(observation, list):
        return [h.get("line_no") for h in observation if isinstance(h, dict)]
    if isinstance(observation, dict) and "error" in observation:
        return "error: " + str(observation["error"])
    return str(observation)


def replay_runs(runs: list[dict[str, Any]], tool: SearchTool) -> tuple[list[dict], list[dict]]:
    """Per question ``{quid, calls, same, differ}`` rows and per call details (logged vs now line numbers)."""
    rows, details = [], []
    for run in runs:
        msgs = run.get("messages", [])
        observations = {m.get("tool_call_id"): m.get("content") for m in msgs if m.get("role") == "tool"}
        same = differ = 0
        for m in msgs:
            for call in m.get("tool_calls") or []:
                args, _ = parse_arguments(call.get("function", {}).get("arguments"))
                logged_raw = observations.get(call.get("id"))
                logged = _lines(json.loads(logged_raw)) if logged_raw else "missing"
                try:
                    now = _lines(tool.call_json(args or {"query": run.get("question", "")}))
                except ToolError as err:
                    now = "error: " + str(err)
                ok = logged == now
                same += ok
                differ += not ok
                details.append(
                    {"quid": run.get("quid"), "arguments": args, "logged": logged, "now": now, "same": ok}
                )
        rows.append({"quid": run.get("quid"), "question": run.get("question", "")[:60], "calls": same + differ,
                     "same": same, "differ": differ, "answer": ", ".join(run.get("answers", []))[:40]})  # fmt: skip
    return rows, details
