"""``tkgqa index`` and ``tkgqa search``: build the fact index, run one tool call."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from effcore.cli import DataDirOpt, OutOpt, console, render_table, write_out
from effcore.errors import EffmlError
from tkgqa.cli._shared import EncoderOpt, KgOpt, ModeOpt, ThreadsOpt, load_runtime, set_threads

__all__ = ["index", "search"]


def index(
    kg: KgOpt = "multitq",
    encoder: EncoderOpt = "minilm",
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-embed even when a valid cache exists.")
    ] = False,
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Embed every fact once and cache the index (keyed by the KG file's SHA-256 and the encoder).

    MultiTQ's 227,892 facts take 15-20 minutes on one CPU thread; later runs only verify the cache.
    """
    set_threads(threads)
    rt = load_runtime(kg, data_dir, encoder, "default", rebuild=rebuild)
    meta = json.loads((rt.index.path / "manifest.json").read_text())
    rows = [{"item": k, "value": v} for k, v in meta.items()]
    console.print(render_table("tkgqa index", rows))
    write_out(out, meta, rows=rows)


def search(
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
        str | None, typer.Option("--position", help="front (head) or back (tail); default: either side.")
    ] = None,
    relation: Annotated[
        str | None, typer.Option("--relation", "-r", help="Relation filter, e.g. Make_a_visit.")
    ] = None,
    top_k: Annotated[
        int, typer.Option("--top-k", "-k", help="Results (AT2QA: 10; compat mode always returns 10).")
    ] = 10,
    kg: KgOpt = "multitq",
    encoder: EncoderOpt = "minilm",
    mode: ModeOpt = "default",
    data_dir: DataDirOpt = None,
    threads: ThreadsOpt = 1,
    out: OutOpt = None,
) -> None:
    """Run one vector_search call, exactly as the agent does, and print the hits.

    Example: tkgqa search "visit China" -e "Barack Obama" --position front --sort time_asc
    """
    from tkgqa.search import ToolError

    set_threads(threads)
    rt = load_runtime(kg, data_dir, encoder, mode)
    try:
        hits = rt.tool.search(query, start_date=start_date, end_date=end_date, sort=sort, entity_filter_name=entity,
                              entity_filter_position=position, relation_filter=relation, top_k=top_k)  # fmt: skip
    except ToolError as err:
        raise EffmlError(str(err)) from None
    rows = [{"line": h.line_no, "score": h.score, "head": t[0], "relation": t[1], "tail": t[2], "date": t[3]}
            for h in hits if (t := h.text.split("\t"))]  # fmt: skip
    console.print(render_table(f"vector_search ({len(rows)} hits, mode {mode})", rows))
    write_out(out, rows, rows=rows)
