"""``tkgqa index`` and ``tkgqa search``: build the fact index, run one tool call."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated

import typer

from effcore.cli import DataDirOpt, OutOpt, console, render_table, write_out
from effcore.errors import ConfigError, EffmlError
from tkgqa.cli._shared import (
    AnnOpt,
    DbOpt,
    EncoderOpt,
    KgOpt,
    ModeOpt,
    SliceOpt,
    StoreOpt,
    ThreadsOpt,
    check_choice,
    check_kg,
    load_runtime,
    set_threads,
)
from tkgqa.search import MODES, POSITIONS, SORTS, ToolError, parse_bound

__all__ = ["index", "search"]


def index(
    ctx: typer.Context,
    kg: KgOpt = "multitq",
    slice_text: SliceOpt = None,
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    ann: AnnOpt = "auto",
    encoder: EncoderOpt = "minilm",
    rebuild: Annotated[
        bool,
        typer.Option(
            "--rebuild", help="Re-embed from zero even when a valid cache or finished chunks exist."
        ),
    ] = False,
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Embed every fact once and cache the index (keyed by the KG's SHA-256 and the encoder).

    MultiTQ's 227,892 facts take 15-20 minutes on one CPU thread; `--slice dev` (40,000 facts) a few.
    The build writes 8,192 facts at a time: after Ctrl-C the same command resumes where it stopped.
    Later runs only verify the cache.
    """
    set_threads(threads)
    choice = check_kg(ctx, kg, slice_text, store, db)
    rt = load_runtime(choice, data_dir, encoder, "default", rebuild=rebuild, ann=ann)
    meta = json.loads((rt.index.path / "manifest.json").read_text())
    if rt.ann is not None:
        meta["ann"] = str(rt.ann.path)
    if rt.kg_slice is not None:
        meta["slice"] = str(rt.kg_slice.spec)
        meta["slice_questions"] = len(rt.kg_slice.questions)
    rows = [{"item": k, "value": v} for k, v in meta.items()]
    console.print(render_table("tkgqa index", rows))
    write_out(out, meta, rows=rows)


def _iso_day(text: str) -> bool:
    try:
        dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_search(query: str, mode: str, sort: str, entity: str | None, position: str | None, top_k: int,
                  start_date: str | None, end_date: str | None) -> None:  # fmt: skip
    """Every search option, before the KG and the index load.

    Compat mode's silent fallbacks (AT2QA's tool ignores an unknown sort, an entity without a position
    and drops both bounds on a date that is not YYYY-MM-DD) are what the agent gets; typed on the
    command line they are errors, since the option would be ignored.
    """
    check_choice(mode, MODES, "--mode")
    if not query.strip():
        raise ConfigError("the query is empty", hint='say in words what to look for, e.g. "visit China"')
    if position is not None and not entity:
        raise ConfigError("--position applies to an entity filter", hint="add -e NAME, or drop --position")
    check_choice(sort, SORTS, "--sort")
    if position is not None:
        check_choice(position, POSITIONS, "--position")
    if mode == "compat":
        if top_k != 10:
            raise ConfigError(f"--top-k {top_k}: compat mode always returns 10 (AT2QA's fixed top_k)",
                              hint="drop --top-k, or use --mode default")  # fmt: skip
        if entity and position is None:
            raise ConfigError("-e without --position filters nothing in compat mode (AT2QA's rule)",
                              hint="add --position front or back, or use --mode default (either side)")  # fmt: skip
        for flag, value in (("--start", start_date), ("--end", end_date)):
            if value is not None and not _iso_day(value):
                raise ConfigError(f"{flag} {value!r}: compat mode takes YYYY-MM-DD only (AT2QA drops both "
                                  "bounds otherwise)", hint="give a full date, or use --mode default")  # fmt: skip
    elif not 1 <= top_k <= 200:
        raise ConfigError(f"--top-k must be in 1..200, got {top_k}")
    try:
        start = parse_bound(start_date, end=False) if start_date else None
        end = parse_bound(end_date, end=True) if end_date else None
    except ToolError as err:
        raise ConfigError(str(err)) from None
    if start is not None and end is not None and start > end:
        raise ConfigError(f"empty date range: --start {start_date} is after --end {end_date}")


def search(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    start_date: Annotated[
        str | None, typer.Option("--start", help="Facts on or after (YYYY[-MM[-DD]]).")
    ] = None,
    end_date: Annotated[
        str | None, typer.Option("--end", help="Facts on or before (YYYY[-MM[-DD]]).")
    ] = None,
    sort: Annotated[str, typer.Option("--sort", help="relevance, time_asc or time_desc.")] = "relevance",
    entity: Annotated[
        str | None, typer.Option("--entity", "-e", help="Entity filter (close spellings resolve).")
    ] = None,
    position: Annotated[
        str | None,
        typer.Option("--position", help="With -e: front (head) or back (tail); default: either side."),
    ] = None,
    relation: Annotated[
        str | None, typer.Option("--relation", "-r", help="Relation filter, e.g. Make_a_visit.")
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Results, 1..200 (AT2QA: 10; compat mode always returns 10).")
    ] = 10,
    kg: KgOpt = "multitq",
    slice_text: SliceOpt = None,
    store: StoreOpt = "numpy",
    db: DbOpt = None,
    ann: AnnOpt = "auto",
    encoder: EncoderOpt = "minilm",
    mode: ModeOpt = "default",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Run one vector_search call, exactly as the agent does, and print the hits.

    Example: tkgqa search "visit China" -e "Barack Obama" --position front --sort time_asc
    """
    set_threads(threads)
    _check_search(query, mode, sort, entity, position, top_k, start_date, end_date)
    choice = check_kg(ctx, kg, slice_text, store, db)
    rt = load_runtime(choice, data_dir, encoder, mode, ann=ann)
    try:
        hits = rt.tool.search(query, start_date=start_date, end_date=end_date, sort=sort, entity_filter_name=entity,
                              entity_filter_position=position, relation_filter=relation, top_k=top_k)  # fmt: skip
    except ToolError as err:
        raise EffmlError(str(err)) from None
    rows = [{"line": h.line_no, "score": h.score, "head": t[0], "relation": t[1], "tail": t[2], "date": t[3]}
            for h in hits if (t := h.text.split("\t"))]  # fmt: skip
    console.print(render_table(f"vector_search ({len(rows)} hits, mode {mode})", rows))
    write_out(out, rows, rows=rows)
