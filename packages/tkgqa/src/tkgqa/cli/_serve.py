"""``tkgqa serve-llm``: a local model behind an OpenAI-compatible HTTP API."""

from __future__ import annotations

from typing import Annotated

import typer

from effcore.cli import console, err_console
from effcore.errors import ConfigError
from tkgqa.cli._shared import ThreadsOpt, check_choice, set_threads
from tkgqa.llm import LOCAL_LLMS

__all__ = ["serve_llm"]


def serve_llm(
    llm: Annotated[
        str, typer.Option("--llm", help="smollm2 (SmolLM2-135M-Instruct) or gemma3-270m.")
    ] = "smollm2",
    host: Annotated[
        str, typer.Option("--host", help="Bind address; loopback unless you mean to expose it.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).")] = 8765,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Tokens generated per reply.")
    ] = 160,
    threads: ThreadsOpt = 1,
) -> None:
    """Serve a local LLM at /v1/chat/completions and /v1/models (tool calls parsed from its text).

    Then: tkgqa ask "..." --policy openai --base-url http://127.0.0.1:8765/v1 --model smollm2
    """
    from tkgqa.llm import LocalChatModel
    from tkgqa.server import make_server

    set_threads(threads)
    check_choice(llm, LOCAL_LLMS, "--llm")
    if not 0 <= port < 65536:
        raise ConfigError(f"--port must be in 0..65535, got {port}")
    if max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if not host.strip():
        raise ConfigError("--host is empty", hint="e.g. 127.0.0.1")
    chat = LocalChatModel(llm, max_new_tokens=max_new_tokens)
    try:
        server = make_server(chat.chat, host=host, port=port, model_name=llm)
    except OSError as err:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({err.strerror})", hint="pick another --port"
        ) from None
    h, p = server.server_address[:2]
    console.print(f"serving {llm} at http://{h}:{p}/v1 (Ctrl-C to stop)", highlight=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        err_console.print("stopped")
    finally:
        server.server_close()
