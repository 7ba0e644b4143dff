"""Options and helpers shared by the tkgqa commands: checks that run before any loading, and loading."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from effcore.assets import portable_path
from effcore.cli import err_console, out_option, progress_bar
from effcore.errors import ConfigError, EffmlError
from tkgqa.embed import ENCODERS
from tkgqa.runtime import ANN_CHOICES, STORES, Runtime, open_runtime
from tkgqa.search import MODES
from tkgqa.slices import SliceSpec
from tkgqa.store import FactStore

__all__ = [
    "AnnOpt",
    "DbOpt",
    "EncoderOpt",
    "KgChoice",
    "KgOpt",
    "LogOpt",
    "ModeOpt",
    "PolicyOpt",
    "SliceOpt",
    "StoreOpt",
    "ThreadsOpt",
    "check_choice",
    "check_kg",
    "given",
    "load_runtime",
    "run_meta",
    "set_threads",
]

KgOpt = Annotated[
    str,
    typer.Option("--kg", help="The KG: 'multitq' (kg_partial, 227,892 facts), 'icews14', or a TSV path "
                 "(head, relation, tail, YYYY-MM-DD; optional header; .gz ok)."),
]  # fmt: skip
SliceOpt = Annotated[
    str | None,
    typer.Option("--slice", help="Cut MultiTQ's KG down to the facts about the entities named in a seeded "
                 "question sample: SPLIT[:PER_QTYPE[:MAX_FACTS[:SEED]]], default dev:20:40000:0 "
                 "(`--slice dev`: ~120 questions, 40,000 facts, a MiniLM index in minutes).",
                 show_default=False),
]  # fmt: skip
StoreOpt = Annotated[
    str,
    typer.Option("--store", help="Where the facts live: 'numpy' (--kg, loaded into memory) or 'duckdb' (--db, a "
                 "database file written by `tkgqa import`, for KGs beyond memory)."),
]  # fmt: skip
DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="--store duckdb: the database file (`tkgqa import FACTS.tsv --store duckdb --db PATH`).",
                 show_default=False),
]  # fmt: skip
AnnOpt = Annotated[
    str,
    typer.Option("--ann", help="Approximate vector index (FAISS HNSW, kept beside the fact index): 'auto' (from "
                 "1,000,000 facts up), 'on' or 'off' (brute force). Time sorts and narrow filters are always exact."),
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
LogOpt = Annotated[
    Path | None,
    out_option("Write every trajectory as JSONL (replay it with `tkgqa replay`).", suffixes=(".jsonl",),
               flag="--log", short=None),
]  # fmt: skip


def check_choice(value: str, choices: Sequence[str], flag: str) -> str:
    """``value`` if it is one of ``choices``, else one ConfigError naming ``flag`` and the choices."""
    if value not in choices:
        raise ConfigError(f"{flag} {value!r} is not one of {', '.join(choices)}")
    return value


def _typed(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def given(ctx: typer.Context, *names: str) -> list[str]:
    """The options among ``names`` (parameter names) that were typed on the command line, as flags."""
    return [
        p.opts[0] if p.opts else p.name for p in ctx.command.params if p.name in names and _typed(ctx, p.name)
    ]


@dataclass(frozen=True, slots=True)
class KgChoice:
    """The KG a command runs on, checked: ``--kg`` (and ``--slice``) for numpy, ``--db`` for duckdb."""

    kg: str
    slice_spec: SliceSpec | None
    store: str
    db: Path | None


def check_kg(ctx: typer.Context, kg: str, slice_text: str | None, store: str = "numpy",
             db: Path | None = None) -> KgChoice:  # fmt: skip
    """Check ``--kg``, ``--slice``, ``--store`` and ``--db`` before anything loads."""
    check_choice(store, STORES, "--store")
    if store == "duckdb":
        if db is None:
            raise ConfigError("--store duckdb reads a database file: --db is missing",
                              hint="add --db PATH (write it with: tkgqa import FACTS.tsv --store duckdb --db PATH)")  # fmt: skip
        for flag in given(ctx, "kg", "slice_text"):
            raise ConfigError(f"{flag} does not apply to --store duckdb (the facts come from --db)",
                              hint=f"drop {flag}, or use --store numpy")  # fmt: skip
        if not db.is_file():
            raise ConfigError(f"--db {db} does not exist",
                              hint="write it first: tkgqa import FACTS.tsv --store duckdb --db PATH")  # fmt: skip
        return KgChoice(kg=kg, slice_spec=None, store=store, db=db)
    if db is not None:
        raise ConfigError("--db applies to --store duckdb", hint="add --store duckdb, or drop --db")
    if kg not in ("multitq", "icews14") and not Path(kg).is_file():
        raise ConfigError(f"--kg {kg!r} is neither 'multitq', 'icews14' nor an existing TSV file",
                          hint="pass multitq, icews14 or a path to your facts")  # fmt: skip
    if slice_text is None:
        return KgChoice(kg=kg, slice_spec=None, store=store, db=None)
    if kg != "multitq":
        raise ConfigError(f"--slice cuts MultiTQ's KG; it does not apply to --kg {kg}",
                          hint="drop --slice, or use --kg multitq")  # fmt: skip
    return KgChoice(kg=kg, slice_spec=SliceSpec.parse(slice_text), store=store, db=None)


def set_threads(n: int) -> None:
    """Pin torch (and, for child libraries, OMP/MKL) to ``n`` threads."""
    if n < 1:
        raise ConfigError(f"--threads must be >= 1, got {n}")
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    os.environ.setdefault("MKL_NUM_THREADS", str(n))
    import torch

    torch.set_num_threads(n)


class IndexBuildInterrupted(EffmlError):
    """Ctrl-C during an index build: the finished chunks are on disk."""

    exit_code = 130


def load_runtime(choice: KgChoice, data_dir: Path | None, encoder: str, mode: str, *,
                 rebuild: bool = False, ann: str = "auto") -> Runtime:  # fmt: skip
    """Open the KG and its index with a progress bar for a (re)build; Ctrl-C keeps the built chunks."""
    check_choice(encoder, ENCODERS, "--encoder")
    check_choice(mode, MODES, "--mode")
    check_choice(ann, ANN_CHOICES, "--ann")
    building = False
    with progress_bar(transient=True) as bar:
        task = None

        def report(done: int, total: int) -> None:
            nonlocal task, building
            building = True
            if task is None:
                task = bar.add_task("embedding facts", total=total)
            bar.update(task, completed=done)

        graph_task = None

        def report_graph(done: int, total: int) -> None:
            nonlocal graph_task, building
            building = True
            if graph_task is None:
                graph_task = bar.add_task("building the approximate index", total=total)
            bar.update(graph_task, completed=done)

        try:
            rt = open_runtime(choice.kg, slice_spec=choice.slice_spec, data_dir=data_dir, encoder=encoder,
                              mode=mode, rebuild=rebuild, progress=report, store=choice.store,
                              db=choice.db, ann=ann, ann_progress=report_graph)  # fmt: skip
        except KeyboardInterrupt:
            if not building:
                raise
            raise IndexBuildInterrupted(
                "interrupted: the finished chunks of the index build are kept",
                hint="run the same command again to resume from them",
            ) from None
    graph = f"; approximate index {rt.ann.path}" if rt.ann is not None else ""
    err_console.print(f"[dim]{rt.store!r}; index {rt.index.path}{graph}[/]", highlight=False)
    return rt


_SECRET = {"api_key"}


def command_line(ctx: typer.Context) -> str:
    """The command as typed: ``tkgqa <command>`` plus every option given on the command line; paths under
    the cache, data or temporary folder written with their named root (``portable_path``), secrets masked."""
    words = ["tkgqa", ctx.info_name or ""]
    for p in ctx.command.params:
        if not _typed(ctx, p.name):
            continue
        value = ctx.params[p.name]
        if p.param_type_name == "argument":
            words.append(shlex.quote(portable_path(str(value))))
        elif getattr(p, "is_flag", False):
            words.append(p.opts[0] if value else (p.secondary_opts or p.opts)[0])
        else:
            words += [p.opts[0], "***" if p.name in _SECRET else shlex.quote(portable_path(str(value)))]
    return " ".join(words)


def run_meta(ctx: typer.Context, rt: Runtime | FactStore, started: float, *, threads: int) -> dict[str, Any]:
    """What a result file needs to be trusted: the command, the machine, the KG and index, the wall time.

    ``rt`` is a :class:`Runtime`, or a bare store for commands that use no fact index (``index`` is then None).
    """
    import torch

    from effcore.provenance import run_meta as effcore_meta

    store, index = (rt.store, rt.index) if isinstance(rt, Runtime) else (rt, None)
    meta = effcore_meta(started=started, command=command_line(ctx), packages=("tkgqa",))
    meta["machine"]["threads"] = threads  # the threads the run was given (torch may report another)
    meta["machine"]["torch"] = torch.__version__
    return {
        **meta,
        "kg": {"source": portable_path(store.source), "facts": len(store), "digest": store.digest},
        "index": None
        if index is None
        else {
            "encoder": index.encoder_name,
            "path": portable_path(index.path),
            "ann": portable_path(rt.ann.path) if rt.ann is not None else None,
        },
    }
