"""Where effml finds data and keeps caches: option > environment variable > default."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import platformdirs

from effcore.errors import DataNotFoundError
from effcore.io import sha256_file

__all__ = ["DATA_ENV", "cache_root", "data_dir", "data_file", "portable_path", "verify_data"]

DATA_ENV = "EFFML_DATA"
CACHE_ENV = "EFFML_CACHE"


def _default_data_candidates() -> list[Path]:
    """``shared/data`` beside the checkout (``<repo>/../shared/data``), looked up from the cwd and this file."""
    starts = [Path.cwd(), Path(__file__).resolve()]
    seen: list[Path] = []
    for start in starts:
        for parent in [start, *start.parents]:
            if (parent / "pyproject.toml").exists() and (parent / "packages").is_dir():
                cand = parent.parent / "shared" / "data"
                if cand not in seen:
                    seen.append(cand)
                break
    return seen


def data_dir(option: str | Path | None = None, *, must_exist: bool = True) -> Path:
    """Resolve the data directory: ``option`` > ``$EFFML_DATA`` > ``../shared/data`` next to the checkout.

    Raises :class:`DataNotFoundError` naming every place it looked and how to set it.
    """
    if option is not None:
        path, origin = Path(option).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV):
        path, origin = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        cands = _default_data_candidates()
        for cand in cands:
            if cand.is_dir():
                return cand.resolve()
        if not must_exist:
            return cands[0] if cands else Path("../shared/data")
        looked = ", ".join(str(c) for c in cands) or "../shared/data"
        raise DataNotFoundError(
            f"no data directory found (looked at {looked})",
            hint=f"pass --data-dir DIR or set {DATA_ENV}=DIR",
        )
    if must_exist and not path.is_dir():
        raise DataNotFoundError(
            f"data directory {path} (from {origin}) does not exist",
            hint=f"pass --data-dir DIR or set {DATA_ENV}=DIR to the folder holding mnist/, text/, ...",
        )
    return path.resolve()


def data_file(relative: str, *, root: str | Path | None = None) -> Path:
    """A file inside the data directory, with an error naming the dataset when it is missing."""
    base = data_dir(root)
    path = base / relative
    if not path.is_file():
        raise DataNotFoundError(
            f"dataset file {relative} not found in {base}",
            hint="check the data directory (see its README) or pass --data-dir",
        )
    return path


def cache_root() -> Path:
    """effml's cache (converted models, device specs, profiles): ``$EFFML_CACHE`` or the user cache dir."""
    env = os.environ.get(CACHE_ENV)
    root = Path(env).expanduser() if env else Path(platformdirs.user_cache_dir("effml"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def portable_path(path: str | Path) -> str:
    """``path`` as a result file should record it: under the cache, the data folder or the temporary
    folder (scratch runs) it is written ``$EFFML_CACHE/...``, ``$EFFML_DATA/...`` or ``$TMPDIR/...``,
    so the file reads the same on every machine; anything else (including text after the path, such
    as a slice label) is kept as given. The cache and data roots win when they lie inside the
    temporary folder."""
    text = str(path)
    roots = [(f"${CACHE_ENV}", cache_root())]
    with contextlib.suppress(DataNotFoundError):
        roots.append((f"${DATA_ENV}", data_dir()))
    roots.append(("$TMPDIR", Path(tempfile.gettempdir())))  # scratch runs: checkpoints, work folders
    for name, root in roots:
        for form in {str(root), str(root.resolve())}:
            if text == form or text.startswith(form + os.sep):
                return name + text[len(form) :]
    return text


def verify_data(root: str | Path | None = None, *, progress=None) -> list[dict]:
    """Check every file listed in the data directory's ``SHA256SUMS``: one row per file with its status.

    Raises :class:`DataNotFoundError` when the directory or its ``SHA256SUMS`` is missing.
    """
    base = data_dir(root)
    sums = base / "SHA256SUMS"
    if not sums.is_file():
        raise DataNotFoundError(
            f"{base} has no SHA256SUMS", hint="point --data-dir at the effml data payload"
        )
    entries = [ln.split(None, 1) for ln in sums.read_text().splitlines() if ln.strip()]
    rows = []
    for i, (digest, name) in enumerate(entries):
        name = name.strip().lstrip("*")
        path = base / name
        if not path.is_file():
            status = "missing"
        else:
            status = "ok" if sha256_file(path) == digest else "checksum mismatch"
        rows.append({"file": name, "bytes": path.stat().st_size if path.is_file() else 0, "status": status})
        if progress:
            progress(i + 1, len(entries))
    return rows
