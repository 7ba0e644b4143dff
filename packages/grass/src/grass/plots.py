"""The ``grass importance`` plot: each layer's MGN and sampling probability at every refresh."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from effcore.errors import ConfigError
from effcore.io import atomic_path

__all__ = ["plot_importance"]


def plot_importance(history: list[dict[str, Any]], path: Path, *, title: str = "") -> Path:
    """Heat maps of MGN (left) and probabilities (right), layers by refresh step; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if not history:
        raise ConfigError(
            "the run has no importance history", hint="only grass and static-grass runs record one"
        )
    steps = [h["step"] for h in history]
    mgn = np.array([h["mgn"] for h in history]).T
    prob = np.array([h["probabilities"] for h in history]).T
    fig, axes = plt.subplots(1, 2, figsize=(min(20, 4 + 0.5 * len(steps)), 5), constrained_layout=True)
    for ax, data, label in (
        (axes[0], mgn, "mean gradient norm (RMS)"),
        (axes[1], prob, "sampling probability"),
    ):
        image = ax.imshow(data, aspect="auto", origin="lower", cmap="viridis")
        ax.set_xticks(range(len(steps)), [str(s) for s in steps], rotation=90, fontsize=7)
        ax.set_xlabel("step of the refresh")
        ax.set_ylabel("layer")
        ax.set_title(label)
        fig.colorbar(image, ax=ax)
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    plt.close(fig)
    return Path(path)
