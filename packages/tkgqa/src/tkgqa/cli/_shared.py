"""Options and helpers shared by the tkgqa commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import err_console, progress_bar
from effcore.errors import ConfigError
from tkgqa.runtime import Runtime, open_runtime

__all__ = [
    "EncoderOpt",
    "KgOpt",
    "ModeOpt",
    "PolicyOpt",
    "ThreadsOpt",
    "load_runtime",
    "set_threads",
]

KgOpt = Annotated[
    str,
    typer.Option("--kg", help="The KG: 'multitq' (kg_partial, 227,892 facts), 'icews14', or a TSV path "
                 "(head, relation, tail, YYYY-MM-DD; optional header; .gz ok)."),
]  # fmt: skip
EncoderOpt = Annotated[
    str,
    typer.Option("--encoder", help="'minilm' (bundled all-MiniLM-L6-v2) or 'hash' (model-free, fast, weak)."),
]
ModeOpt = Annotated[
    str,
    typer.Option("--mode", help="Tool semantics: 'default' (time sorts scan every match, robust names, "
                 "errors instead of fallbacks) or 'compat' (AT2QA exactly: top-50 then time sort, silent fallbacks)."),
]  # fmt: skip
PolicyOpt = Annotated[
    str,
    typer.Option("--policy", "-p", help="'planner' (deterministic, no LLM), 'openai' (an OpenAI-compatible "
                 "server: --base-url/--model or $TKGQA_BASE_URL/$TKGQA_MODEL/$OPENAI_API_KEY), or 'local' "
                 "(SmolLM2/Gemma-3 via transformers, served over loopback HTTP)."),
]  # fmt: skip
ThreadsOpt = Annotated[
    int, typer.Option("--threads", help="torch/numpy CPU threads (1 keeps the machine free).")
]


def set_threads(n: int) -> None:
    """Pin torch (and, for child libraries, OMP/MKL) to ``n`` threads."""
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)


def load_runtime(
    kg: str, data_dir: Path | None, encoder: str, mode: str, *, rebuild: bool = False
) -> Runtime:
    """Open the KG and its index with a progress bar for a (re)build."""
    with progress_bar(transient=True) as bar:
        task = None

        def report(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = bar.add_task("embedding facts", total=total)
            bar.update(task, completed=done)

        rt = open_runtime(kg, data_dir=data_dir, encoder=encoder, mode=mode, rebuild=rebuild, progress=report)
    err_console.print(f"[dim]{rt.store!r}; index {rt.index.path}[/]", highlight=False)
    return rt
