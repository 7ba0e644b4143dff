"""The longest Evoformer each memory technique trains under a process memory limit (CPU).

Each (form, length) trains one step in a fresh Python process, which reports its peak resident set
(``ru_maxrss``) before and after the step: the operating system's own count, allocator caches and
transients included, so "fits in 16 GiB" means what a user's machine would see. Lengths grow until a
form's peak passes the limit. A length whose peak, extrapolated from the last two measured ones
(the step's growth as a power law in N), would exceed the limit by more than ``margin`` or the memory the machine has free
is not started: the sweep never drives the machine out of memory, and the row says why it stopped.

DELTA's own forms are not in this sweep: on CPU its "host" is the same memory, so a swap moves bytes
without lowering the process's peak; its budget is checked by its meter instead (:mod:`delta.sweep`).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from effcore.errors import ConfigError

__all__ = ["LIMIT_FORMS", "LimitRow", "available_bytes", "evoformer_limits", "longest", "probe"]

LIMIT_FORMS = ("plain", "chunked", "checkpoint", "checkpoint+chunked", "bf16")


@dataclass(kw_only=True, slots=True)
class LimitRow:
    """One form at one length: peak RSS of the whole process and of the process before the step
    (Python, torch, model, inputs), the step's seconds; or ``skipped`` with the reason."""

    form: str
    residues: int
    peak_rss: int | None
    base_rss: int | None
    seconds: float | None
    skipped: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def probe(form: str, residues: int, *, chunk: int = 4, threads: int = 1) -> dict:
    """Train one step of ``form`` at ``residues`` in this process; peak and base RSS in bytes (Linux)."""
    import resource
    import time

    import torch

    from delta.evoformer import EvoformerConfig, EvoformerStack, evoformer_loss
    from delta.toolkit import MixedPrecision

    torch.set_num_threads(threads)
    kw: dict = {}
    if "chunked" in form:
        kw["chunk_size"] = chunk
    if "checkpoint" in form:
        kw["checkpoint"] = "recompute-all"
    model = EvoformerStack(EvoformerConfig(), **kw)
    m, z = model.inputs(residues, torch.Generator().manual_seed(residues))
    precision = MixedPrecision(precision="bf16" if form == "bf16" else "fp32")
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with precision.autocast():
        loss = evoformer_loss(model, m, z)
    precision.backward(loss)
    seconds = time.perf_counter() - t0
    return {"peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base_rss": base,
            "seconds": seconds}  # fmt: skip


def available_bytes() -> int:
    """``MemAvailable`` from /proc/meminfo (what can be allocated without swapping)."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemAvailable in /proc/meminfo")


def _child(form: str, residues: int, chunk: int, threads: int) -> dict:
    code = (f"import json; from delta.limits import probe; "
            f"print(json.dumps(probe({form!r}, {residues}, chunk={chunk}, threads={threads})))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": f"exit {out.returncode}: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _extrapolate(points: list[tuple[int, int, int]], n: int) -> float | None:
    """Peak at ``n`` from the last two (N, peak, base) points: the step's growth over the base as a power
    law in N (exponent clamped to [1, 3.5]: the triangle attention grows as N^3), plus the base."""
    if len(points) < 2:
        return None
    (n0, p0, b0), (n1, p1, b1) = points[-2], points[-1]
    g0, g1 = max(p0 - b0, 1), max(p1 - b1, 1)
    exponent = min(max(math.log(g1 / g0) / math.log(n1 / n0), 1.0), 3.5)
    return b1 + g1 * (n / n1) ** exponent


def _seconds(points: list[tuple[int, float]], n: int) -> float | None:
    """Step time at ``n`` from the last two (N, seconds) points, a power law (exponent in [1, 3.5])."""
    if len(points) < 2:
        return None
    (n0, s0), (n1, s1) = points[-2], points[-1]
    exponent = min(max(math.log(max(s1, 1e-9) / max(s0, 1e-9)) / math.log(n1 / n0), 1.0), 3.5)
    return s1 * (n / n1) ** exponent


def evoformer_limits(lengths: Sequence[int], forms: Sequence[str], *, limit: int, margin: float = 1.15,
                     max_seconds: float | None = None, chunk: int = 4, threads: int = 1,
                     run: Callable[..., dict] = _child,
                     free: Callable[[], int] = available_bytes,
                     progress: Callable[[str], None] | None = None) -> list[LimitRow]:  # fmt: skip
    """Grow each form's length over ``lengths`` until its peak RSS passes ``limit`` (bytes); with
    ``max_seconds``, a length whose step is predicted to take longer is not started either (the row
    says so: the form's longest length is then a lower bound)."""
    bad = [f for f in forms if f not in LIMIT_FORMS]
    if bad:
        raise ConfigError(f"unknown forms {bad}", hint=f"choose from {', '.join(LIMIT_FORMS)}")
    if not lengths or sorted(lengths) != list(lengths) or min(lengths) < 2:
        raise ConfigError(f"lengths must be increasing and at least 2, got {list(lengths)}")
    rows: list[LimitRow] = []
    for form in forms:
        points: list[tuple[int, int, int]] = []
        times: list[tuple[int, float]] = []
        for n in lengths:
            guess, slow = _extrapolate(points, n), _seconds(times, n)
            reason = None
            if guess is not None and guess > limit * margin:
                reason = f"predicted {guess / 2**30:.1f} GiB > {margin:g} x the limit"
            elif guess is not None and guess > free() - 2**30:
                reason = (
                    f"predicted {guess / 2**30:.1f} GiB > the {free() / 2**30:.1f} GiB free on the machine"
                )
            elif slow is not None and max_seconds is not None and slow > max_seconds:
                reason = f"predicted step {slow:.0f} s > {max_seconds:g} s (time cap, not memory)"
            if reason:
                rows.append(LimitRow(form=form, residues=n, peak_rss=None, base_rss=None, seconds=None,
                                     skipped=reason))  # fmt: skip
                break
            if progress is not None:
                progress(f"{form} N={n}")
            out = run(form, n, chunk, threads)
            if "error" in out:
                rows.append(LimitRow(form=form, residues=n, peak_rss=None, base_rss=None, seconds=None,
                                     skipped=out["error"]))  # fmt: skip
                break
            rows.append(LimitRow(form=form, residues=n, **out))
            points.append((n, out["peak_rss"], out["base_rss"]))
            times.append((n, out["seconds"]))
            if out["peak_rss"] > limit:
                break
    return rows


def longest(rows: Sequence[LimitRow], limit: int) -> dict[str, int | None]:
    """Per form, the longest measured length whose peak stayed within ``limit``."""
    best: dict[str, int | None] = {}
    for r in rows:
        best.setdefault(r.form, None)
        if r.peak_rss is not None and r.peak_rss <= limit:
            best[r.form] = max(best[r.form] or 0, r.residues)
    return best
