"""Gantt chart of a simulated step: one row per stage, forward/recompute/backward bars with micro-batches."""

from __future__ import annotations

from pathlib import Path

from effcore.errors import ConfigError
from merak.simulate import SimResult

__all__ = ["gantt"]

_COLOURS = {"F": "#4C72B0", "R": "#DD8452", "B": "#55A868", "AR": "#9A9A9A"}
_HATCH = {"full": "//", "none": "..", "stage": ""}  # what the forward kept (see merak.schedules)
_SUFFIXES = (".png", ".pdf", ".svg")


def gantt(result: SimResult, path: str | Path, *, title: str | None = None, dpi: int = 150) -> Path:
    """Draw ``result`` to ``path`` (.png, .pdf or .svg): stage 0 on top, time in milliseconds.
    Forwards that kept only their input are hatched ``//``, those that kept everything ``..``;
    grey is the data-parallel gradient all-reduce. Returns the path written."""
    path = Path(path)
    if path.suffix.lower() not in _SUFFIXES:
        raise ConfigError(f"cannot draw a Gantt chart to {path.name!r}", hint="use .png, .pdf or .svg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    scale = 1e3  # seconds -> ms
    step = result.step_s * scale
    fig, ax = plt.subplots(figsize=(min(20.0, max(8.0, result.microbatches)), 0.6 * result.stages + 1.6))
    for s, events in enumerate(result.events):
        y = result.stages - 1 - s
        for e in events:
            left, width = e.start * scale, (e.end - e.start) * scale
            hatch = _HATCH[e.ckpt] if e.op == "F" else ""
            ax.barh(
                y,
                width,
                left=left,
                height=0.8,
                color=_COLOURS[e.op],
                edgecolor="white",
                linewidth=0.5,
                hatch=hatch,
            )
            if width > 0.012 * step:
                ax.text(left + width / 2, y, str(e.mb), ha="center", va="center", fontsize=7, color="white")
        start, end = result.allreduce[s]
        if end > start:
            ax.barh(y, (end - start) * scale, left=start * scale, height=0.8, color=_COLOURS["AR"])
    ax.set_yticks(range(result.stages), [f"stage {s}" for s in reversed(range(result.stages))])
    ax.set_xlim(0, step * 1.01 if step > 0 else 1)
    ax.set_xlabel("time (ms)")
    ax.set_title(
        title
        or f"{result.kind}, {result.microbatches} micro-batches: step {step:.3g} ms, "
        f"bubble {result.bubble_overall:.1%}"
    )
    legend = [
        Patch(color=_COLOURS[k], label=label)
        for k, label in (("F", "forward"), ("R", "recompute"), ("B", "backward"), ("AR", "DP all-reduce"))
    ]
    legend += [
        Patch(facecolor="white", edgecolor="black", hatch="//", label="F keeps input only"),
        Patch(facecolor="white", edgecolor="black", hatch="..", label="F keeps all"),
    ]
    ax.legend(
        handles=legend,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.18 - 0.1 / result.stages),
        ncol=6,
        fontsize=7,
        frameon=False,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
