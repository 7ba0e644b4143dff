"""Policies for the agent loop: the deterministic planner and an OpenAI-compatible chat client."""

from __future__ import annotations

import json
import math
import os
import urllib.parse
from typing import Any

from effcore.errors import ConfigError
from tkgqa.agent import PolicyError
from tkgqa.planner import Planner, PlanOutcome
from tkgqa.prompt import system_prompt
from tkgqa.search import tool_schema

__all__ = [
    "DEFAULT_BASE_URL",
    "ENV_API_KEY",
    "ENV_BASE_URL",
    "ENV_MODEL",
    "OpenAIChatPolicy",
    "PlannerPolicy",
    "check_base_url",
]

ENV_BASE_URL = "TKGQA_BASE_URL"
ENV_MODEL = "TKGQA_MODEL"
ENV_API_KEY = "OPENAI_API_KEY"
DEFAULT_BASE_URL = "http://127.0.0.1:8765/v1"


def check_base_url(url: str, *, source: str = "--base-url") -> str:
    """``url`` without a trailing slash if it is an http(s) URL with a host; else one ConfigError."""
    parts = urllib.parse.urlsplit(url.strip())
    try:
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok or " " in url.strip():
        raise ConfigError(f"{source} {url!r} is not an http(s) URL with a host",
                          hint="e.g. http://127.0.0.1:8765/v1 (tkgqa serve-llm) or https://api.example.com/v1")  # fmt: skip
    return url.strip().rstrip("/")


class PlannerPolicy:
    """Drives :class:`Planner` through the agent loop: each planned call becomes a tool call message."""

    name = "planner"

    def __init__(self, planner: Planner, *, answers: int = 1) -> None:
        self.planner = planner
        self.answers = answers
        self._gen = None
        self._n = 0
        self.last: PlanOutcome | None = None

    def start(self, question: str) -> list[dict[str, Any]]:
        self._gen = self.planner.run(question)
        self._n = 0
        self.last = None
        return [
            {"role": "system", "content": "deterministic MultiTQ planner"},
            {"role": "user", "content": question},
        ]

    def next(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        if self._gen is None:
            raise PolicyError("PlannerPolicy.next() before start()")
        try:
            if messages[-1].get("role") == "tool":
                obs = json.loads(messages[-1]["content"])
                call = self._gen.send(obs if isinstance(obs, list) else [])
            else:
                call = next(self._gen)
        except StopIteration as stop:
            self.last = stop.value
            picked = stop.value.answers[: self.answers]
            body = ", ".join(picked)
            return {
                "role": "assistant",
                "content": f"<answer>{body}</answer>" if body else "<answer>unknown</answer>",
            }
        self._n += 1
        return {"role": "assistant", "content": None, "tool_calls": [{
            "id": f"call_{self._n}", "type": "function",
            "function": {"name": "vector_search", "arguments": json.dumps(call)},
        }]}  # fmt: skip


class OpenAIChatPolicy:
    """An OpenAI-compatible ``/chat/completions`` client (function calling) with AT2QA's prompt.

    Options fall back to ``$TKGQA_BASE_URL``, ``$TKGQA_MODEL`` and ``$OPENAI_API_KEY``. Requests go
    through the ``openai`` client library: each attempt is bounded by ``timeout`` seconds, and the
    library retries a dropped connection, a timeout, HTTP 408/409/429 and 5xx ``retries`` times with
    backoff. A response without a usable message is asked for again ``retries`` times (counted as
    repairs). An unreachable server, a timeout or an HTTP error is one clear :class:`PolicyError`.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        temperature: float = 0.0,
        fewshot: bool = True,
        retries: int = 2,
        with_top_k: bool = False,
    ) -> None:
        import openai

        if base_url:
            self.base_url = check_base_url(base_url)
        elif os.environ.get(ENV_BASE_URL):
            self.base_url = check_base_url(os.environ[ENV_BASE_URL], source=f"${ENV_BASE_URL}")
        else:
            self.base_url = DEFAULT_BASE_URL
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout}")
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        self.model = model or os.environ.get(ENV_MODEL) or "local"
        self.timeout, self.temperature, self.retries = timeout, temperature, retries
        self.prompt = system_prompt(fewshot=fewshot)
        self.tools = [tool_schema(with_top_k=with_top_k)]
        self.name = f"openai:{self.model}"
        key = api_key or os.environ.get(ENV_API_KEY) or ""
        # Without a key no Authorization header is sent (local servers need none): the library needs a
        # key to build a client, so it gets a placeholder and each request omits the header.
        self.client = openai.OpenAI(base_url=self.base_url, api_key=key or "unused", timeout=timeout,
                                    max_retries=retries)  # fmt: skip
        self._headers = {} if key else {"Authorization": openai.omit}

    def start(self, question: str) -> list[dict[str, Any]]:
        return [{"role": "system", "content": self.prompt}, {"role": "user", "content": question}]

    def complete(self, messages: list[dict[str, Any]], *, use_tools: bool = True):
        """One chat completion (the library's retries included); transport and HTTP errors -> PolicyError.

        ``use_tools=False`` sends no tool schema (GenTKGQA's relation and time mining asks for plain JSON).
        """
        import openai

        url = f"{self.base_url}/chat/completions"
        tools = {"tools": self.tools, "tool_choice": "auto"} if use_tools else {}
        try:
            return self.client.chat.completions.create(model=self.model, messages=messages, **tools,
                                                       temperature=self.temperature, extra_headers=self._headers)  # fmt: skip
        except openai.APIStatusError as err:
            body = err.response.text[:300]
            raise PolicyError(f"LLM server at {url} answered HTTP {err.status_code}: {body}",
                              hint="check --model and the API key ($OPENAI_API_KEY)") from None  # fmt: skip
        except openai.APITimeoutError:
            raise PolicyError(
                f"the LLM server at {url} did not answer within {self.timeout:g} s (attempts: {self.retries + 1})",
                hint="raise --timeout, or check the server",
            ) from None
        except openai.APIConnectionError as err:
            reason = err.__cause__ or err
            raise PolicyError(
                f"cannot reach the LLM server at {url} ({reason})",
                hint=f"start one with `tkgqa serve-llm`, or pass --base-url / set ${ENV_BASE_URL}",
            ) from None

    def next(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        import openai

        repairs = 0
        for _ in range(self.retries + 1):
            try:
                reply = self.complete(messages)
            except (openai.APIResponseValidationError, json.JSONDecodeError):
                repairs += 1  # a 200 answer that is no chat completion: ask again
                continue
            try:  # the library builds response objects without validating them: check what is used
                msg = reply.choices[0].message
                content, calls, extra = msg.content, msg.tool_calls, msg.model_extra or {}
            except (AttributeError, IndexError, TypeError):
                repairs += 1
                continue
            # tkgqa's own server reports the repairs it made while parsing the model's text.
            out = {
                "role": "assistant",
                "content": content,
                "_repairs": repairs + int(extra.get("tkgqa_repairs") or 0),
            }
            if calls:
                out["tool_calls"] = [c.model_dump(mode="json", exclude_none=True) for c in calls]
            return out
        raise PolicyError(f"the LLM server at {self.base_url} sent {repairs} malformed responses in a row",
                          hint="check that it speaks the OpenAI chat-completions format")  # fmt: skip
