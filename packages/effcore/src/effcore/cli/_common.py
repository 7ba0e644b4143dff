"""Shared CLI plumbing for every effml package: option aliases, the error convention, output."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from effcore.errors import EffmlError
from effcore.io import check_writable, write_rows

__all__ = [
    "DataDirOpt",
    "DeviceOpt",
    "EffmlGroup",
    "JsonOutOpt",
    "OutOpt",
    "PlotOpt",
    "SeedOpt",
    "console",
    "err_console",
    "int_list",
    "make_app",
    "out_option",
    "parse_bytes",
    "progress_bar",
    "render_table",
    "stage_reporter",
    "write_out",
]

console = Console()
err_console = Console(stderr=True)

DeviceOpt = Annotated[
    str,
    typer.Option("--device", "-d", help="Where to run: 'auto' (CUDA if present, else CPU), 'cpu', 'cuda:N'."),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Random seed (runs are deterministic for a given seed).")
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Folder with effml's datasets (mnist/, text/, ...). Default: $EFFML_DATA, then ../shared/data "
        "beside the checkout.",
        show_default=False,
    ),
]


def out_option(
    help: str,
    *,
    suffixes: Sequence[str] | None = (".json", ".csv"),
    flag: str = "--out",
    short: str | None = "-o",
) -> Any:
    """A ``typer.Option`` for a file the command writes: the path is checked when the command line is
    parsed (extension in ``suffixes``, not a directory, its folder writable), so a bad path fails in one
    line before any work, not after it (see :func:`effcore.io.check_writable`)."""

    def check(value: Path | None) -> Path | None:
        return None if value is None else check_writable(value, suffixes=suffixes, flag=flag)

    names = (flag, short) if short else (flag,)
    return typer.Option(*names, help=help, show_default=False, callback=check)


OutOpt = Annotated[Path | None, out_option("Also write the results to this file: .json or .csv.")]
JsonOutOpt = Annotated[
    Path | None, out_option("Also write the result to this JSON file.", suffixes=(".json",))
]
PlotOpt = Annotated[
    Path | None,
    out_option(
        "Save a plot to this file (.png, .pdf or .svg).",
        suffixes=(".png", ".pdf", ".svg"),
        flag="--plot",
        short=None,
    ),
]


def int_list(text: str, flag: str) -> list[int]:
    """Parse a comma-separated list of positive integers given to ``flag`` (``"8,16,32"``)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise EffmlError(
            f"{flag} takes comma-separated integers, got {text!r}", hint="e.g. 8,16,32"
        ) from None
    if not values or min(values) < 1:
        raise EffmlError(f"{flag} needs positive integers, got {text!r}")
    return values


_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str, *, flag: str = "--memory-cap", positive: bool = True) -> int:
    """``'2GiB'`` -> 2147483648 (B, KB/MB/GB decimal, KiB/MiB/GiB binary); 0 only if not ``positive``.

    Errors name ``flag``, the option the text came from.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _BYTE_UNITS:
        raise EffmlError(
            f"{flag}: cannot read a memory size from {text!r}", hint="write e.g. 2GiB, 512MiB or 80GB"
        )
    value = int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])
    if positive and value <= 0:
        raise EffmlError(f"{flag} must be positive, got {text!r}", hint="write e.g. 2GiB, 512MiB or 80GB")
    return value


def _fail(message: str) -> None:
    # escape(): a message quoting "[eml]" or "[0, 1)" must print as written, not as rich markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class EffmlGroup(typer.core.TyperGroup):
    """A Typer group that turns :class:`EffmlError` into one red line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EffmlError as err:
            _fail(str(err))
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            _fail("interrupted")
            raise typer.Exit(130) from None


def make_app(name: str, help: str) -> typer.Typer:
    """The Typer app of an effml package, with the shared error convention and no completion noise."""
    return typer.Typer(
        name=name,
        help=help,
        cls=EffmlGroup,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_show_locals=False,
        rich_markup_mode="rich",
    )


class _LogProgress(Progress):
    """Progress for a stderr that is not a terminal (a log file, CI): no live bar (it would only be
    drawn once, at the end) but plain lines: one when a task completes, and on the way one at each
    tenth reached at least ``min_gap_s`` after the previous line (and one every ``every_s`` seconds),
    so a long job in a log says how far it is and a quick one prints a single line."""

    def __init__(self, *columns: Any, min_gap_s: float = 5.0, every_s: float = 30.0, **kwargs: Any) -> None:
        super().__init__(*columns, disable=True, auto_refresh=False, **kwargs)
        self._min_gap_s, self._every_s = min_gap_s, every_s
        self._last: dict[TaskID, tuple[int, float]] = {}

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks.get(task_id)
        if task is None:
            return
        now = time.monotonic()
        if task.total is None:  # indeterminate: a count every every_s seconds
            _, last_t = self._last.setdefault(task_id, (0, now))
            if now - last_t >= self._every_s:
                self._last[task_id] = (0, now)
                err_console.print(
                    f"{task.description}: {task.completed:g} ({task.elapsed or 0.0:.0f} s)",
                    markup=False,
                    highlight=False,
                )
            return
        total = max(float(task.total), 1.0)
        tenth = min(int(10 * task.completed / total), 10)
        last_tenth, last_t = self._last.setdefault(task_id, (0, now))
        if last_tenth == 10:
            return
        gap = now - last_t
        if tenth == 10 or (tenth > last_tenth and gap >= self._min_gap_s) or gap >= self._every_s:
            self._last[task_id] = (tenth, now)
            err_console.print(
                f"{task.description}: {task.completed:g}/{task.total:g}"
                f" ({100 * task.completed / total:.0f}%, {task.elapsed or 0.0:.0f} s)",
                markup=False,
                highlight=False,
            )

    def add_task(self, description: str, *args: Any, **kwargs: Any) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._report(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)


@contextmanager
def progress_bar(*, transient: bool = False) -> Iterator[Progress]:
    """A rich progress bar on stderr (so ``--out -`` style stdout stays clean); when stderr is not a
    terminal, plain progress lines instead (see ``_LogProgress``)."""
    if not (err_console.is_terminal or err_console.is_jupyter):
        with _LogProgress(TextColumn("{task.description}"), console=err_console) as progress:
            yield progress
        return
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
    with progress:
        yield progress


def stage_reporter(bar: Progress, name: str):
    """A ``(stage, done, total)`` callback drawing one task per stage; byte counts are shown in MiB."""
    tasks: dict[str, TaskID] = {}

    def report(stage: str, done: int, total: int) -> None:
        scale = 2**20 if total > 2**20 else 1
        if stage not in tasks:
            label = f"{name}: {stage}" + (" (MiB)" if scale > 1 else "")
            tasks[stage] = bar.add_task(label, total=total // scale)
        bar.update(tasks[stage], completed=done // scale, total=total // scale)

    return report


def render_table(
    title: str, rows: Sequence[dict[str, Any]], *, columns: Sequence[str] | None = None
) -> Table:
    """A rich table of dict rows; floats are shown with 4 significant digits."""
    cols = list(columns or (rows[0].keys() if rows else []))
    # Text: a title is printed as written (no markup, no emoji codes: "tiny:llama:" is not a llama)
    table = Table(title=Text(title), header_style="bold cyan")
    for col in cols:
        numeric = bool(rows) and isinstance(rows[0].get(col), int | float)
        table.add_column(col, justify="right" if numeric else "left")
    for row in rows:
        table.add_row(*(_fmt(row.get(col)) for col in cols))
    return table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_out(path: Path | None, payload: Any, *, rows: Sequence[dict[str, Any]] | None = None) -> None:
    """Write ``payload`` as JSON, or ``rows`` as CSV when ``path`` ends in .csv; atomic (tmp + rename)."""
    if path is None:
        return
    if path.suffix.lower() == ".csv" and rows is None:
        raise EffmlError(f"--out {path}: this command has no tabular result", hint="use .json")
    write_rows(path, rows or [], payload=payload)
    err_console.print(f"wrote {path}")
