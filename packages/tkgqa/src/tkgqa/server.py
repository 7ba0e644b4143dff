"""``tkgqa serve-llm``: an OpenAI-compatible HTTP server (``/v1/chat/completions``, ``/v1/models``) on loopback."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["ChatBackend", "make_server", "serve_in_thread"]

ChatBackend = Callable[[list[dict[str, Any]], list[dict] | None], dict[str, Any]]
"""``(messages, tools) -> assistant message`` (e.g. :meth:`LocalChatModel.chat`)."""


def _handler(backend: ChatBackend, model_name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "tkgqa-llm/0.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the CLI prints its own lines
            return

        def _send(self, code: int, payload: dict[str, Any]) -> None:
            body = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout): nothing to do
                return

        def _error(self, code: int, message: str) -> None:
            self._send(code, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self) -> None:
            if self.path.rstrip("/") in ("/v1/models", "/models"):
                self._send(
                    200,
                    {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "tkgqa"}]},
                )
            else:
                self._error(404, f"no route {self.path}; try /v1/models or POST /v1/chat/completions")

        def do_POST(self) -> None:
            if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                self._error(404, f"no route {self.path}")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length).decode("utf-8"))
                messages = req["messages"]
                if not isinstance(messages, list) or not messages:
                    raise ValueError("messages must be a non-empty list")
            except (ValueError, KeyError, json.JSONDecodeError) as err:
                self._error(400, f"bad request: {err}")
                return
            try:
                msg = backend(messages, req.get("tools"))
            except Exception as err:  # the server must answer, not die: report the failure as HTTP 500
                self._error(500, f"generation failed: {type(err).__name__}: {err}")
                return
            finish = "tool_calls" if msg.get("tool_calls") else "stop"
            self._send(200, {
                "id": "chatcmpl-" + uuid.uuid4().hex[:16], "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model") or model_name,
                "choices": [{"index": 0, "message": msg, "finish_reason": finish}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            })  # fmt: skip

    return Handler


def make_server(
    backend: ChatBackend, *, host: str = "127.0.0.1", port: int = 8765, model_name: str = "local"
) -> ThreadingHTTPServer:
    """A threading HTTP server for ``backend`` (``port=0`` picks a free port; see ``server_address``)."""
    return ThreadingHTTPServer((host, port), _handler(backend, model_name))


def serve_in_thread(
    backend: ChatBackend, *, host: str = "127.0.0.1", port: int = 0, model_name: str = "local"
):
    """Start a server in a daemon thread; returns ``(server, base_url)``; stop with ``server.shutdown()``."""
    server = make_server(backend, host=host, port=port, model_name=model_name)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    h, p = server.server_address[:2]
    return server, f"http://{h}:{p}/v1"
