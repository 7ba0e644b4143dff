"""A local chat model through transformers (SmolLM2 / Gemma-3 via effcore) with tool calls parsed from text."""

from __future__ import annotations

import json
import re
import threading
import uuid
from typing import Any

from tkgqa.agent import parse_arguments
from tkgqa.prompt import TEXT_TOOL_PROTOCOL

__all__ = ["LOCAL_LLMS", "LocalChatModel", "parse_tool_call", "to_plain_messages", "trim_turn"]

LOCAL_LLMS = ("smollm2", "gemma3-270m")
"""effcore model assets this package serves: SmolLM2-135M-Instruct and Gemma-3-270M."""

_TURN_MARKERS = ("<|im_end|>", "<|im_start|>", "<end_of_turn>", "<start_of_turn>")
_CALL_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')


def trim_turn(text: str) -> str:
    """The reply up to the first turn marker: base models (Gemma-3-270M) run on past the turn's end."""
    for marker in _TURN_MARKERS:
        text = text.split(marker, 1)[0]
    return text.strip()


def parse_tool_call(text: str) -> tuple[str, dict[str, Any], bool] | None:
    """Find ``{"name": ..., "arguments": {...}}`` in model text; ``(name, arguments, repaired)`` or None.

    Accepts the object inside code fences or prose, ``parameters`` for ``arguments``, arguments given
    as a JSON string, and (repaired) single quotes or trailing commas.
    """
    if "<answer>" in text.lower() or not _CALL_NAME.search(text.replace("'", '"')):
        return None
    lo = text.find("{")
    if lo < 0:
        return None
    try:  # well-formed JSON first: braces inside string values are no problem for the decoder
        value, _ = json.JSONDecoder().raw_decode(text[lo:])
        if isinstance(value, dict) and "name" in value:
            return _as_call(value, repaired=False)
    except json.JSONDecodeError:
        pass
    depth, hi = 0, -1
    for i in range(lo, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            hi = i
            break
    blob = text[lo : hi + 1] if hi > 0 else text[lo:] + "}" * depth
    obj, _ = parse_arguments(blob)
    if not obj or "name" not in obj:
        return None
    return _as_call(obj, repaired=True)


def _as_call(obj: dict[str, Any], *, repaired: bool) -> tuple[str, dict[str, Any], bool] | None:
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args, rep2 = parse_arguments(args)
        repaired = repaired or rep2
    if not isinstance(args, dict):
        return None
    return str(obj["name"]), args, repaired


def to_plain_messages(
    messages: list[dict[str, Any]], *, max_observation_chars: int = 1500
) -> list[dict[str, str]]:
    """OpenAI messages as plain system/user/assistant text turns for models without tool templates."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = m.get("role")
        if role == "tool":
            out.append(
                {
                    "role": "user",
                    "content": "Observation: " + str(m.get("content", ""))[:max_observation_chars],
                }
            )
        elif role == "assistant" and m.get("tool_calls"):
            calls = [
                {"name": c["function"]["name"], "arguments": c["function"].get("arguments")}
                for c in m["tool_calls"]
            ]
            out.append({"role": "assistant", "content": json.dumps(calls[0] if len(calls) == 1 else calls)})
        elif role == "system" and out:
            out.append({"role": "user", "content": str(m.get("content") or "")})
        else:
            out.append({"role": str(role), "content": str(m.get("content") or "")})
    return out


class LocalChatModel:
    """Greedy chat completions from an effcore causal-LM asset (``smollm2`` or ``gemma3-270m``) on CPU."""

    def __init__(self, asset: str = "smollm2", *, device: str = "cpu", max_new_tokens: int = 160,
                 max_prompt_tokens: int = 3072) -> None:  # fmt: skip
        from effcore.assets import load_causal_lm

        self.asset = asset
        self.model, self.tokenizer = load_causal_lm(asset, device=device)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.max_prompt_tokens = max_prompt_tokens
        self._lock = threading.Lock()

    def _render(self, messages: list[dict[str, str]]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + "<|im_start|>assistant\n"

    def generate(self, prompt: str) -> str:
        import torch

        ids = self.tokenizer(prompt, return_tensors="pt").input_ids
        if ids.shape[1] > self.max_prompt_tokens:  # keep the start (instructions) and the latest turns
            keep = self.max_prompt_tokens // 2
            ids = torch.cat([ids[:, :keep], ids[:, -keep:]], dim=1)
        with self._lock, torch.inference_mode():
            out = self.model.generate(ids.to(self.device), max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)  # fmt: skip
        return trim_turn(self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))

    def chat(self, messages: list[dict[str, Any]], tools: list[dict] | None = None) -> dict[str, Any]:
        """One OpenAI-style assistant message; a JSON tool call in the text becomes ``tool_calls``."""
        plain = to_plain_messages(messages)
        if tools and plain and plain[0]["role"] == "system" and TEXT_TOOL_PROTOCOL not in plain[0]["content"]:
            plain[0] = {"role": "system", "content": plain[0]["content"] + "\n\n" + TEXT_TOOL_PROTOCOL}
        text = self.generate(self._render(plain))
        call = parse_tool_call(text) if tools else None
        if call is None:
            return {"role": "assistant", "content": text}
        name, args, repaired = call
        if name != "vector_search" and "query" in args and len(tools) == 1:
            name, repaired = "vector_search", True  # the only tool: a misnamed call is still that call
        return {"role": "assistant", "content": None, "tkgqa_repairs": int(repaired), "tool_calls": [{
            "id": "call_" + uuid.uuid4().hex[:12], "type": "function",
            "function": {"name": name, "arguments": json.dumps(args)},
        }]}  # fmt: skip
