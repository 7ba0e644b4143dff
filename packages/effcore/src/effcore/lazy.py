"""Lazy package exports: ``import pkg`` stays cheap (no torch) until a name is first used."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` (PEP 562) that imports ``exports[name]`` on first use.

    Use as ``__getattr__ = lazy_getattr(__name__, {"Name": "pkg.module", ...})``. The resolved
    value is stored in the package's namespace, so later lookups skip this function.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
