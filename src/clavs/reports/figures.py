"""Figures: the accuracy matrix of a run as a heatmap (the paper's Figure 5 style), and the shared
plumbing of every report figure (matplotlib's Agg backend; PNG for the page, SVG for papers)."""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clavs.reports.tables import METRIC_TITLES
from clavs.utils.io import atomic_write_bytes

PNG_DPI = 120


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class MethodStyle:
    colour: str
    line: str  # matplotlib linestyle
    marker: str


LINES, MARKERS = ("-", "--", ":"), ("o", "s", "^")


def method_styles(labels: Any) -> dict[str, MethodStyle]:
    """A style per method label, by its place in the sorted labels, so that a method looks the same
    in every figure that shows the same methods: matplotlib's ten cycle colours, then the ten again
    dashed and with square markers (more than ten methods stay apart), and so on."""
    return {label: MethodStyle(f"C{i % 10}", LINES[i // 10 % 3], MARKERS[i // 10 % 3])
            for i, label in enumerate(sorted(set(labels)))}


def figure_bytes(fig: Any, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes (SVG without a date, so the same figure gives the same file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=PNG_DPI, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


@dataclass
class SavedFigure:
    """A figure written as `<stem>.png` and `<stem>.svg`; `png` holds the PNG bytes for inlining."""

    png_path: Path
    svg_path: Path
    png: bytes


def save_figure(fig: Any, out_dir: str | os.PathLike, stem: str) -> SavedFigure:
    """Write `fig` as PNG and SVG into out_dir (atomically) and close it."""
    out = Path(out_dir)
    try:
        png, svg = figure_bytes(fig, "png"), figure_bytes(fig, "svg")
    finally:
        pyplot().close(fig)
    return SavedFigure(atomic_write_bytes(out / f"{stem}.png", png), atomic_write_bytes(out / f"{stem}.svg", svg), png)


def matrix_array(R: list[list[Any]]) -> Any:
    """R[t][j] as a float array, None (not evaluated) as NaN."""
    import numpy as np

    return np.array([[math.nan if v is None else v for v in row] for row in R], dtype=float)


def draw_matrix(ax: Any, R: Any, title: str, *, annotate: bool = True) -> Any:
    """Draw R[t][j] (row = after task t, column = task j) on `ax` with a 0..100 scale; NaN cells blank.
    Returns the image (for a colour bar)."""
    import numpy as np

    T = R.shape[0]
    im = ax.imshow(np.ma.masked_invalid(R), cmap="viridis", vmin=0, vmax=100)
    if annotate and T <= 12:
        for t in range(T):
            for j in range(T):
                if not math.isnan(R[t, j]):
                    ax.text(j, t, f"{R[t, j]:.0f}", ha="center", va="center", fontsize=8,
                            color="white" if R[t, j] < 60 else "black")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task t")
    ax.set_title(title, fontsize=10)
    return im


def plot_matrix(matrices: dict[str, Any], metric: str, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Write a heatmap of R[t][j] (row = after task t, column = task j); unevaluated cells blank."""
    plt = pyplot()
    if metric not in matrices["metrics"]:
        raise KeyError(f"no metric '{metric}' in this run; have {', '.join(matrices['metrics'])}")
    R = matrix_array(matrices["metrics"][metric]["R"])
    size = max(3.5, 0.45 * R.shape[0] + 1.5)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    im = draw_matrix(ax, R, title or f"{METRIC_TITLES.get(metric, metric)} R[t][j]")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    try:
        png = figure_bytes(fig, "png")
    finally:
        plt.close(fig)
    return atomic_write_bytes(path, png)
