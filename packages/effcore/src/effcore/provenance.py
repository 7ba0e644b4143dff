"""What a result file records about the run that wrote it: the command, the code, the machine, the time.

One shape for every package's result files and benchmarks (``run_meta``), so a reader finds the same
keys everywhere and a file never names one machine's folders (paths go through ``portable_path``).
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["command_line", "git_commit", "machine_info", "run_meta"]


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as a reader would retype it: ``python <script>`` for a script (relative to the
    working directory when inside it), the console script's name for an installed command, and every
    argument that is a path under the cache, data or temporary folder written with its named root."""
    from effcore.assets.paths import portable_path

    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    script = Path(argv[0])
    if script.suffix == ".py":
        with_cwd = script.resolve()
        head = [
            "python",
            str(with_cwd.relative_to(Path.cwd()) if with_cwd.is_relative_to(Path.cwd()) else script),
        ]
    else:
        head = [script.name]
    return shlex.join([*head, *(portable_path(a) for a in argv[1:])])


def git_commit(where: str | Path | None = None) -> str | None:
    """The checkout's short commit, ``+dirty`` when tracked files differ from it; None outside git."""
    cwd = Path(where) if where is not None else Path.cwd()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()  # fmt: skip
        if not head:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=30).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "")


def _package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info(device: object | None = None) -> dict[str, Any]:
    """The machine a run computed on: CPU, load, platform, python, torch and threads (when torch is
    imported), the device and, on CUDA, the GPU's name."""
    from effcore.device import cpu_model

    machine: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        machine["torch"] = torch.__version__
        machine["threads"] = torch.get_num_threads()
    if device is not None:
        machine["device"] = str(device)
        if str(device).startswith("cuda") and torch is not None and torch.cuda.is_available():
            machine["gpu"] = torch.cuda.get_device_name(torch.device(str(device)))
    return machine


def run_meta(
    *,
    started: float | None = None,
    device: object | None = None,
    command: str | Sequence[str] | None = None,
    packages: Sequence[str] = (),
) -> dict[str, Any]:
    """The provenance block of a result file.

    ``started`` is a ``time.perf_counter()`` reading taken when the run began (gives
    ``wall_seconds``); ``device`` the device the run computed on; ``command`` the command (default:
    this process's ``sys.argv``, see ``command_line``); ``packages`` extra distributions whose
    versions matter (torch's is always recorded when torch is imported).
    """
    if command is None or not isinstance(command, str):
        command = command_line(command)
    versions = {p: _package_version(p) for p in packages}
    meta: dict[str, Any] = {
        "command": command,
        "git_commit": git_commit(),
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_seconds": round(time.perf_counter() - started, 1) if started is not None else None,
        "machine": machine_info(device),
    }
    if versions:
        meta["versions"] = versions
    return meta
