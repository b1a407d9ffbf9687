"""Figure 6: normalised radar profiles of the methods of one protocol on six axes.

Raw value of each axis (the continual values are the run's summary of the report's metric, mAP by
default, mean over seeds; docs/report.md repeats these definitions):

    accuracy           AA      = mean of the last row of R
    retention          100 - F (F: forgetting)
    plasticity         LA      = mean of the diagonal of R
    stability          100 + BWT
    speed              training frames per second = sum of train_frames / sum of train_seconds over
                       tasks (profile.json; evaluation, model selection and setup excluded)
    memory efficiency  1 / trainable parameters (profile.json trainable_parameters_max: what the
                       optimiser state and the gradients scale with; the CPU's peak RSS is not used
                       because it counts the decoded dataset held in memory, the same for every method)

Normalisation, per axis across the methods drawn in one panel: min-max onto [0.1, 1],

    n(v) = 0.1 + 0.9 (v - min) / (max - min),

so the best method on an axis reaches the rim and the worst keeps a visible 0.1; when every method has
the same value (or there is one method) the axis is 1 for all. A value that is missing (no profile,
NaN summary) is drawn at 0 and shown as n/a in the report's table.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable

from clavs.protocols.scenario import PROTOCOL_NAMES
from clavs.reports.collect import MethodGroup, mean_over_runs, train_frames_per_second, trainable_parameters
from clavs.reports.figures import SavedFigure, method_styles, pyplot, save_figure

FLOOR = 0.1


@dataclass(frozen=True)
class RadarAxis:
    key: str
    title: str
    definition: str
    value: Callable[[MethodGroup], float]  # raw value, higher is better


def _inverse(x: float) -> float:
    return 1.0 / x if x > 0 and not math.isnan(x) else math.nan


AXES = (
    RadarAxis("accuracy", "Accuracy", "AA: mean of the last row of R (after the last task)", lambda g: g.mean("aa")),
    RadarAxis("retention", "Retention", "100 - Forgetting", lambda g: 100.0 - g.mean("forgetting")),
    RadarAxis("plasticity", "Plasticity", "LA: mean of the diagonal R[t][t] (just after learning each task)",
              lambda g: g.mean("la")),
    RadarAxis("stability", "Stability", "100 + BWT (backward transfer)", lambda g: 100.0 + g.mean("bwt")),
    RadarAxis("speed", "Speed", "training frames per second (profile.json: frames / training seconds over tasks)",
              lambda g: mean_over_runs([train_frames_per_second(r["profile"]) for r in g.runs])),
    RadarAxis("memory", "Memory efficiency", "1 / trainable parameters (profile.json trainable_parameters_max)",
              lambda g: _inverse(mean_over_runs([trainable_parameters(r["profile"]) for r in g.runs]))),
)


@dataclass
class RadarProfile:
    label: str
    raw: dict[str, float]
    normalised: dict[str, float]


def normalise(values: list[float], floor: float = FLOOR) -> list[float]:
    """Min-max onto [floor, 1] over the finite values; all equal -> 1; NaN -> 0."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return [0.0] * len(values)
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if math.isnan(v):
            out.append(0.0)
        elif hi == lo:
            out.append(1.0)
        else:
            out.append(min(1.0, floor + (1.0 - floor) * ((v - lo) / (hi - lo))))  # exactly 1 at the max
    return out


def radar_profiles(groups: list[MethodGroup]) -> list[RadarProfile]:
    """Raw and normalised axis values of each group (the normalisation spans exactly these groups)."""
    raw = [{a.key: a.value(g) for a in AXES} for g in groups]
    columns = {a.key: normalise([r[a.key] for r in raw]) for a in AXES}
    return [RadarProfile(g.label, raw[i], {k: columns[k][i] for k in columns}) for i, g in enumerate(groups)]


def plot_radar(panels: list[tuple[str, list[RadarProfile]]], out_dir: str | os.PathLike,
               stem: str = "fig6_radar") -> SavedFigure | None:
    """One polar panel per protocol, one closed polygon per method."""
    panels = [(p, profiles) for p, profiles in panels if profiles]
    if not panels:
        return None
    plt = pyplot()
    n = len(AXES)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    cols = min(2, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.6 * cols, 5.6 * rows), squeeze=False,
                             subplot_kw={"projection": "polar"}, layout="constrained")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    styles = method_styles(prof.label for _, profiles in panels for prof in profiles)
    for ax, (protocol, profiles) in zip(axes.flat, panels):
        for prof in profiles:
            values = [prof.normalised[a.key] for a in AXES]
            values.append(values[0])
            style = styles[prof.label]
            ax.plot(angles, values, color=style.colour, ls=style.line, lw=1.5, label=prof.label)
            ax.fill(angles, values, color=style.colour, alpha=0.08)
        ax.set_xticks(angles[:-1])
        ax.set_xticklabels([a.title for a in AXES], fontsize=8)
        ax.tick_params(axis="x", pad=6)
        ax.set_ylim(0, 1)
        ax.set_yticks([0.25, 0.5, 0.75, 1.0])
        ax.set_yticklabels([])
        ax.set_title(f"{PROTOCOL_NAMES.get(protocol, protocol)} ({protocol.upper()})", fontsize=10, pad=18)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2, fontsize=8, frameon=False)
    return save_figure(fig, out_dir, stem)
