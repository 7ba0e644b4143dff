"""Run a package's Typer app in-process and check effml's CLI convention.

``cli_ok`` asserts exit code 0; ``cli_fails`` asserts the expected failure: the exit code (2 for an
``EffmlError``), the message fragment, no traceback, and a single ``error:`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

import typer
from click.testing import Result
from typer.testing import CliRunner

__all__ = ["cli_fails", "cli_ok"]

_runner = CliRunner()


def cli_ok(app: typer.Typer, args: Sequence[str]) -> Result:
    """Invoke ``app`` with ``args``; assert it exits 0 (the output is shown when it does not)."""
    result = _runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def cli_fails(app: typer.Typer, args: Sequence[str], match: str, *, code: int = 2) -> Result:
    """Invoke ``app`` with ``args``; assert exit ``code``, ``match`` in the output, no traceback and at
    most one ``error:`` line."""
    result = _runner.invoke(app, list(args))
    assert result.exit_code == code, result.output
    assert match in result.output, result.output
    assert "Traceback" not in result.output, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, result.output
    return result
