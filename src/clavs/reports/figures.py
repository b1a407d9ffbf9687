"""Figures: the accuracy matrix of a run as a heatmap (the paper's Figure 5 style)."""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

from clavs.reports.tables import METRIC_TITLES
from clavs.utils.io import atomic_write_bytes


def plot_matrix(matrices: dict[str, Any], metric: str, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a heatmap of R[t][j] (row = after task t, column = task j); unevaluated cells blank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    if metric not in matrices["metrics"]:
        raise KeyError(f"no metric '{metric}' in this run; have {', '.join(matrices['metrics'])}")
    R = np.array([[math.nan if v is None else v for v in row] for row in matrices["metrics"][metric]["R"]], dtype=float)
    T = R.shape[0]
    size = max(3.5, 0.45 * T + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0, vmax=100)
    if T <= 12:
        for t in range(T):
            for j in range(T):
                if not math.isnan(R[t, j]):
                    ax.text(j, t, f"{R[t, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if R[t, j] < 60 else "black")
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task t")
    ax.set_title(title or f"{METRIC_TITLES.get(metric, metric)} R[t][j]")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
