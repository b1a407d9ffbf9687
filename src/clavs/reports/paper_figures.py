"""The paper's summary figures from finished runs (docs/report.md defines each):

- Figure 4, `plot_transfer_forgetting`: forward transfer (FWT) against forgetting, one panel per
  protocol (TIL, DIL), one point per method: the mean over seeds (bars: ± std when several seeds);
- Figure 5, `plot_heatmaps`: the accuracy matrix R[t][j] of Max-F per method (CIL), averaged
  element-wise over seeds;
- `plot_anytime`: a task-free run's anytime-accuracy curve (score of the seen test clips against
  the training clips seen), with its area A_auc; `plot_anytime_methods`: every method's curve, the
  mean over its seeds, in one plot.

FWT and forgetting are the runs' summary.json values (metrics/continual.py computed them), never
recomputed here.
"""

from __future__ import annotations

import math
import os
import statistics
from typing import Any

from clavs.metrics.names import METRIC_TITLES
from clavs.protocols.scenario import PROTOCOL_NAMES
from clavs.reports.collect import MethodGroup
from clavs.reports.figures import SavedFigure, draw_matrix, matrix_array, method_styles, pyplot, save_figure

TRANSFER_PROTOCOLS = ("til", "dil")
HEATMAP_PROTOCOL = "cil"


def plot_transfer_forgetting(groups: list[MethodGroup], metric: str, out_dir: str | os.PathLike,
                             stem: str = "fig4_transfer_vs_forgetting") -> SavedFigure | None:
    """Figure 4 for the TIL and DIL groups among `groups` (None when there are none)."""
    panels = [(p, [g for g in groups if g.protocol == p]) for p in TRANSFER_PROTOCOLS]
    panels = [(p, gs) for p, gs in panels if gs]
    if not panels:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4), squeeze=False)
    name = METRIC_TITLES.get(metric, metric)
    styles = method_styles(g.label for _, gs in panels for g in gs)
    for ax, (protocol, gs) in zip(axes[0], panels):
        for g in gs:
            x, y = g.mean("forgetting"), g.mean("fwt")
            if math.isnan(x) or math.isnan(y):
                continue
            style = styles[g.label]
            several = len(g.runs) > 1
            ax.errorbar(x, y, xerr=g.std("forgetting") if several else None, yerr=g.std("fwt") if several else None,
                        fmt=style.marker, color=style.colour, capsize=3, markersize=7)
            ax.annotate(g.label, (x, y), textcoords="offset points", xytext=(6, 5), fontsize=8, color=style.colour)
        ax.axhline(0.0, color="grey", lw=0.6, ls=":")
        ax.axvline(0.0, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"Forgetting ({name}, lower is better)")
        ax.set_ylabel(f"Forward transfer FWT ({name}, higher is better)")
        ax.set_title(f"{PROTOCOL_NAMES.get(protocol, protocol)} ({protocol.upper()})", fontsize=10)
        ax.margins(0.25)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def mean_matrix(group: MethodGroup, metric: str) -> Any:
    """Element-wise mean over the group's seeds of R[t][j] of `metric` (NaN where no seed has a value)."""
    import numpy as np

    mats = [matrix_array(run["matrices"]["metrics"][metric]["R"]) for run in group.runs
            if metric in run["matrices"].get("metrics", {})]
    if not mats or len({m.shape for m in mats}) != 1:
        return None
    stack = np.stack(mats)
    with np.errstate(invalid="ignore"):
        counts = np.sum(~np.isnan(stack), axis=0)
        sums = np.nansum(stack, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def plot_heatmaps(groups: list[MethodGroup], metric: str, out_dir: str | os.PathLike,
                  stem: str = "fig5_heatmaps", protocol: str = HEATMAP_PROTOCOL) -> SavedFigure | None:
    """Figure 5: one heatmap per method of `protocol` (None when there is no such run with `metric`)."""
    panels = [(g, mean_matrix(g, metric)) for g in groups if g.protocol == protocol]
    panels = [(g, R) for g, R in panels if R is not None]
    if not panels:
        return None
    plt = pyplot()
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    T = max(R.shape[0] for _, R in panels)
    side = max(3.2, 0.4 * T + 1.6)
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1.0, side * rows + 0.9), squeeze=False,
                             layout="constrained")
    image = None
    for ax, (g, R) in zip(axes.flat, panels):
        seeds = f" ({len(g.runs)} seeds)" if len(g.runs) > 1 else ""
        image = draw_matrix(ax, R, f"{g.label}{seeds}")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{METRIC_TITLES.get(metric, metric)} accuracy matrices R[t][j], "
                 f"{PROTOCOL_NAMES.get(protocol, protocol)} ({protocol.upper()})", fontsize=11)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    return save_figure(fig, out_dir, stem)


def _anytime_rows(run: dict[str, Any], metric: str) -> dict[Any, tuple[float, float]]:
    """{training step: (clips seen, score)} of every anytime evaluation of a run that has `metric`, in
    order (a point without a step is keyed by its place)."""
    rows = {}
    for i, p in enumerate((run.get("anytime") or {}).get("points") or []):
        n, v = p.get("clips_seen"), (p.get("scores") or {}).get(metric)
        if isinstance(n, (int, float)) and isinstance(v, (int, float)):
            rows[p.get("step", i)] = (float(n), float(v))
    return rows


def anytime_points(run: dict[str, Any], metric: str) -> tuple[list[float], list[float]]:
    """(clips seen, score) of every anytime evaluation of a run that has `metric`; empty without a curve."""
    rows = list(_anytime_rows(run, metric).values())
    return [n for n, _ in rows], [v for _, v in rows]


def mean_anytime_curve(runs: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    """(clips seen, score), each the mean over `runs` (seeds) at the training steps where every one of
    them was evaluated; empty when a run has no curve."""
    curves = [_anytime_rows(run, metric) for run in runs]
    if not curves or not all(curves):
        return [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return ([statistics.fmean(c[k][0] for c in curves) for k in steps],
            [statistics.fmean(c[k][1] for c in curves) for k in steps])


def mean_a_auc(group: MethodGroup, metric: str) -> float:
    """The mean A_auc of `metric` over the group's runs that have one (NaN when none has)."""
    values = [((r.get("summary") or {}).get(metric) or {}).get("a_auc") for r in group.runs]
    values = [v for v in values if isinstance(v, (int, float))]
    return statistics.fmean(values) if values else math.nan


def plot_anytime_methods(groups: list[MethodGroup], metric: str, out_dir: str | os.PathLike,
                         stem: str = "anytime_by_method") -> SavedFigure | None:
    """Every method's anytime-accuracy curve in one plot (mean over its seeds; the legend gives the
    mean A_auc, best first); None when no group has a curve."""
    curves = [(g, mean_a_auc(g, metric), *mean_anytime_curve(g.runs, metric)) for g in groups]
    curves = sorted((c for c in curves if c[2]), key=lambda c: (math.isnan(c[1]), -c[1]))
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    styles = method_styles(g.label for g, *_ in curves)
    for g, a_auc, x, y in curves:
        style = styles[g.label]
        seeds = f", {len(g.runs)} seeds" if len(g.runs) > 1 else ""
        label = g.label + (f" (A_auc {a_auc:.2f}{seeds})" if not math.isnan(a_auc) else "")
        ax.step([0.0] + x, [y[0]] + y, where="pre", color=style.colour, ls=style.line, lw=1.3, label=label)
    ax.set_xlabel("training clips seen")
    ax.set_ylabel(f"{METRIC_TITLES.get(metric, metric)} on the seen test clips")
    protocols = sorted({"TF-CL" if g.protocol == "tfcl" else g.protocol.upper() for g, *_ in curves})
    ax.set_title(f"Anytime accuracy, mean over seeds ({', '.join(protocols)})", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)


def plot_anytime(run: dict[str, Any], metric: str, title: str, out_dir: str | os.PathLike, stem: str) -> SavedFigure | None:
    """The anytime-accuracy curve of one run (None when it has none)."""
    clips, scores = anytime_points(run, metric)
    if not clips:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    # Each score stands for the stretch of the stream that led to it (the A_auc weighting): the area
    # under this step line divided by the clips seen is A_auc.
    ax.step([0.0] + clips, [scores[0]] + scores, where="pre", color="C0", lw=1.2, alpha=0.6)
    ax.plot(clips, scores, "o", color="C0", markersize=3)
    a_auc = (run.get("summary") or {}).get(metric, {}).get("a_auc")
    name = METRIC_TITLES.get(metric, metric)
    ax.set_xlabel("training clips seen")
    ax.set_ylabel(f"{name} on the seen test clips")
    ax.set_title(title + (f"   A_auc = {a_auc:.2f}" if isinstance(a_auc, (int, float)) else ""), fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, out_dir, stem)
