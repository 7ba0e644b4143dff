"""Memory sizes as the command line writes them: ``2GiB``, ``512MiB``, ``80GB`` (no torch import)."""

from __future__ import annotations

import re

from effcore.errors import ConfigError

__all__ = ["parse_bytes"]

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


def parse_bytes(text: str, *, flag: str = "--memory-cap", positive: bool = True) -> int:
    """``'2GiB'`` -> 2147483648 (B, KB/MB/GB decimal, KiB/MiB/GiB binary); 0 only if not ``positive``.

    Errors name ``flag``, the option the text came from.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(
            f"{flag}: cannot read a memory size from {text!r}", hint="write e.g. 2GiB, 512MiB or 80GB"
        )
    value = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if positive and value <= 0:
        raise ConfigError(f"{flag} must be positive, got {text!r}", hint="write e.g. 2GiB, 512MiB or 80GB")
    return value
