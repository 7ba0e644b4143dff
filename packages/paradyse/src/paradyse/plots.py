"""Plots of a profile (time per layer against length, with the fitted models) and of a simulation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from paradyse.config import STRATEGIES
from paradyse.costmodel import Profile

__all__ = ["plot_profile", "plot_simulation"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_profile(prof: Profile, path: Path) -> Path:
    """Measured ms per layer per strategy (points) and each time model (lines, to 2x the longest)."""
    import numpy as np
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, m in prof.time_models().items():
        pts = sorted((pt["seq_len"], pt["layer_time_s"]) for pt in prof.points if pt["strategy"] == k)
        xs, ys = zip(*pts, strict=True)
        line = ax.plot(xs, np.array(ys) * 1e3, "o", label=k)[0]
        grid = np.linspace(min(xs), max(xs) * 2, 100)
        ax.plot(grid, m.predict(grid) * 1e3, "-", color=line.get_color(), lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel="ms per layer (fwd+bwd)",
           title=f"{prof.model.name}, {prof.world_size} ranks")  # fmt: skip
    ax.set_xticks(sorted({pt["seq_len"] for pt in prof.points}))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_simulation(curve: dict[str, Any], path: Path) -> Path:
    """Seconds per step against length for every static strategy and the adaptive plan."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    rows = curve["rows"]
    for k in [*STRATEGIES, "adaptive"]:
        pts = [(r["seq_len"], r[f"{k}_s"]) for r in rows if r.get(f"{k}_s") is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-" if k != "adaptive" else "k--", label=k, lw=1)
    ax.set(xscale="log", yscale="log", xlabel="sequence length (K tokens)", ylabel="seconds per step",
           title=f"{curve['model']} on {curve['p']} x {curve['hardware']}")  # fmt: skip
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1024:.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
