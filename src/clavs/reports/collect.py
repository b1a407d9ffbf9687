"""The finished runs a report shows, grouped as the tables group them: one `MethodGroup` per row of
results/aggregate.py (a resolved config without its seed), holding that row's mean ± std summary and
the loaded run directories of its seeds (matrices, profile, anytime curve, paths to link to)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clavs.errors import RunDirError
from clavs.results.aggregate import aggregate, config_without_seed
from clavs.results.store import RunInfo, config_hash, list_runs, load_run

PROTOCOL_ORDER = ("til", "cil", "dil", "tfcl")


@dataclass
class MethodGroup:
    """One table row (`row`, see results.aggregate) and the runs (seeds) it averages, sorted by seed."""

    row: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""  # as figures name it: the row's label, prefixed by its experiment when there are several

    @property
    def protocol(self) -> str:
        return self.row["protocol"]

    def mean(self, key: str) -> float:
        """Mean over seeds of a continual summary value of the row's metric (NaN when missing)."""
        return self.row.get(key, (math.nan, math.nan))[0]

    def std(self, key: str) -> float:
        return self.row.get(key, (math.nan, math.nan))[1]


@dataclass
class ReportRuns:
    groups: list[MethodGroup]
    all_runs: list[RunInfo]  # every run directory found (finished or not), for the per-run section
    damaged: list[tuple[Path, str]]
    metric: str

    def of_protocol(self, protocol: str) -> list[MethodGroup]:
        return [g for g in self.groups if g.protocol == protocol]

    @property
    def protocols(self) -> list[str]:
        present = {g.protocol for g in self.groups}
        return [p for p in PROTOCOL_ORDER if p in present] + sorted(present - set(PROTOCOL_ORDER))


def collect_runs(runs_dir: str | os.PathLike, metric: str = "map") -> ReportRuns:
    """Every finished run under `runs_dir`, grouped by config without seed (as `clavs table` does).

    A run whose files cannot be read is left out and listed in `damaged` with the reason."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise RunDirError(f"{runs_dir}: no such folder (give the folder holding the run directories, e.g. runs/)")
    damaged: list[tuple[Path, str]] = []
    rows = aggregate(runs_dir, metric=metric, damaged=damaged)
    by_hash = {row["config_hash"]: MethodGroup(row=row) for row in rows}
    left_out = {p for p, _ in damaged}
    for info in list_runs(runs_dir, done_only=True):
        if info.path in left_out:
            continue
        try:
            run = load_run(info.path)
        except (RunDirError, OSError):
            continue  # aggregate() has named it in `damaged` already
        group = by_hash.get(config_hash(config_without_seed(run["config"])))
        if group is not None:
            run["seed"] = info.seed
            group.runs.append(run)
    groups = [g for g in by_hash.values() if g.runs]
    several = len({g.row["experiment"] for g in groups}) > 1
    for g in groups:
        g.runs.sort(key=lambda r: r["seed"])
        g.label = f"{g.row['experiment']}: {g.row['label']}" if several else g.row["label"]
    return ReportRuns(groups=groups, all_runs=list_runs(runs_dir), damaged=damaged, metric=metric)


def train_frames_per_second(profile: dict[str, Any]) -> float:
    """Training throughput of a run: sum over tasks of frames trained / sum of training seconds
    (model selection, evaluation and setup excluded). NaN when the profile has no training time."""
    tasks = profile.get("tasks") or []
    frames = sum(t.get("train_frames") or 0 for t in tasks)
    seconds = sum(t.get("train_seconds") or 0.0 for t in tasks)
    return frames / seconds if seconds > 0 else math.nan


def trainable_parameters(profile: dict[str, Any]) -> float:
    """The most parameters the optimiser updated in any task (profile.json `trainable_parameters_max`)."""
    value = profile.get("trainable_parameters_max")
    return float(value) if isinstance(value, (int, float)) and value > 0 else math.nan


def mean_over_runs(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
