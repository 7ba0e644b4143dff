"""``tkgqa import``: stream a fact TSV into a DuckDB store, with progress, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from effcore.cli import (
    OutOpt,
    console,
    err_console,
    out_option,
    progress_bar,
    render_table,
    stage_reporter,
    write_out,
)
from effcore.errors import ConfigError, EffmlError
from tkgqa.cli._shared import check_choice
from tkgqa.importer import CHUNK_ROWS, import_tsv

__all__ = ["import_cmd"]


class ImportInterrupted(EffmlError):
    """Ctrl-C during an import: the committed chunks are in the database."""

    exit_code = 130


def import_cmd(
    facts: Annotated[
        Path,
        typer.Argument(
            help="The facts: head, relation, tail, YYYY-MM-DD per line (tabs; "
            "optional header naming the columns, optional line column; .gz ok)."
        ),
    ],
    store: Annotated[str, typer.Option("--store", help="The store to import into: duckdb.")] = "duckdb",
    db: Annotated[
        Path | None,
        out_option(
            "The database file to write (or to resume).", suffixes=(".duckdb", ".db"), flag="--db", short=None
        ),
    ] = None,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Facts per committed chunk (the most a hard stop loses).")
    ] = CHUNK_ROWS,
    restart: Annotated[
        bool, typer.Option("--restart", help="Delete --db first and import from line 1.")
    ] = False,
    out: OutOpt = None,
) -> None:
    """Stream a fact TSV into a DuckDB store in chunks, never holding the facts in memory.

    Each chunk is committed with the import's position: after a bad line (the error names it; the facts
    before it are kept) or Ctrl-C, the same command resumes where it stopped, once it has checked that
    the lines before that point are unchanged. Then: tkgqa eval --store duckdb --db PATH.
    """
    check_choice(store, ("duckdb",), "--store")
    if db is None:
        raise ConfigError("--db is missing: the database file to write", hint="add --db PATH.duckdb")
    if chunk_rows < 1:
        raise ConfigError(f"--chunk-rows must be >= 1, got {chunk_rows}")
    with progress_bar(transient=True) as bar:
        report = stage_reporter(bar, "import")
        try:
            result = import_tsv(facts, db, chunk_rows=chunk_rows, restart=restart,
                                progress=lambda done, total: report(f"importing {facts.name}", done, total))  # fmt: skip
        except KeyboardInterrupt:
            raise ImportInterrupted("interrupted: the committed chunks of the import are kept",
                                    hint="run the same command again to resume from them") from None  # fmt: skip
    payload = result.to_dict()
    rows = [{"item": k, "value": v} for k, v in payload.items()]
    console.print(render_table("tkgqa import", rows))
    err_console.print(f"[dim]next: tkgqa eval --store duckdb --db {db}[/]", highlight=False)
    write_out(out, payload, rows=rows)
