"""Validation-only model selection over a sweep: per (method, protocol), the grid point with the best
validation AA (mean over its finished seeds of the AA in summary_val.json; test files are never
read), written as a config file `clavs run --config` and `clavs sweep --selected` take."""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from clavs.errors import RunDirError
from clavs.launch.grid import Job, varying_keys
from clavs.metrics.names import METRIC_TITLES
from clavs.results.store import SUMMARY_VAL_FILE, RunDir
from clavs.utils.io import atomic_write_text


@dataclass
class PointScore:
    point: tuple[tuple[str, str], ...]
    jobs: list[Job] = field(default_factory=list)
    values: dict[int, float] = field(default_factory=dict)  # seed -> validation AA of a finished run
    problems: list[str] = field(default_factory=list)

    def label(self, keys: set[str] | None = None) -> str:
        """The point's values (only `keys`, when given: those that differ within its group)."""
        return " ".join(f"{k}={v}" for k, v in self.point if keys is None or k in keys) or "(defaults)"

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values.values()) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed, NaN for none)."""
        n = len(self.values)
        return statistics.stdev(self.values.values()) if n > 1 else (0.0 if n else math.nan)


def validation_aa(run_dir: Path, metric: str) -> float | None:
    """AA of `metric` on the validation clips of a finished run; None when it has none (yet)."""
    run = RunDir(run_dir)
    if not run.done or not (run.path / SUMMARY_VAL_FILE).exists():
        return None
    values = run.summary("val").get(metric)
    aa = values.get("aa") if isinstance(values, dict) else None
    if aa is None:
        return None
    if isinstance(aa, bool) or not isinstance(aa, (int, float)):
        raise RunDirError(f"{run.path / SUMMARY_VAL_FILE}: {metric}.aa is {aa!r}, not a number")
    return float(aa)


def rank(jobs: list[Job], metric: str = "map") -> dict[tuple[str, str], list[PointScore]]:
    """Per (method, protocol): its grid points, best validation AA first (ties in grid order; points
    without a finished run last)."""
    groups: dict[tuple[str, str], dict[tuple, PointScore]] = defaultdict(dict)
    for job in jobs:
        score = groups[(job.method, job.protocol)].setdefault(job.point, PointScore(job.point))
        score.jobs.append(job)
        try:
            value = validation_aa(job.run_dir, metric)
        except (RunDirError, OSError) as e:
            score.problems.append(str(e))
            continue
        if value is not None and not math.isnan(value):
            score.values[job.seed] = value
    return {key: sorted(points.values(), key=lambda s: -s.mean if s.values else math.inf)
            for key, points in groups.items()}


def write_selection(ranking: dict[tuple[str, str], list[PointScore]], out_dir: str | os.PathLike,
                    metric: str = "map") -> list[Path]:
    """`<out_dir>/<method>.<protocol>.yaml` for every group with a finished grid point: the method
    section of the best point's config.yaml."""
    written = []
    for (method, protocol), scores in sorted(ranking.items()):
        best = scores[0] if scores and scores[0].values else None
        if best is None:
            continue
        seed = min(best.values)
        winner = next(j for j in best.jobs if j.seed == seed)
        section = RunDir(winner.run_dir).config()["method"]
        seeds = ",".join(map(str, sorted(best.values)))
        head = (f"# clavs select: {method} on {protocol}: the grid point with the best validation AA "
                f"({METRIC_TITLES.get(metric, metric)}) of {len(scores)}\n"
                f"# point: {best.label()}\n# validation AA {best.mean:.2f} over seeds {seeds}; run {winner.run_dir}\n")
        path = Path(out_dir) / f"{method}.{protocol}.yaml"
        atomic_write_text(path, head + yaml.safe_dump({"method": section}, sort_keys=False))
        written.append(path)
    return written


def ranking_tables(ranking: dict[tuple[str, str], list[PointScore]], metric: str) -> list:
    """Rich tables of the ranking: validation AA only."""
    from rich.table import Table

    title = METRIC_TITLES.get(metric, metric)
    out = []
    for (method, protocol), scores in sorted(ranking.items()):
        keys = varying_keys([s.point for s in scores])
        table = Table(title=f"{method} on {protocol}: validation AA ({title}), best first")
        for col in ("", "grid point", "seeds", f"validation AA ({title})"):
            table.add_column(col, justify="right" if col.startswith("validation") else "left")
        for i, s in enumerate(scores):
            seeds = f"{len(s.values)}/{len(s.jobs)}"
            value = "—" if not s.values else (f"{s.mean:.2f} ± {s.std:.2f}" if len(s.values) > 1 else f"{s.mean:.2f}")
            table.add_row("best" if i == 0 and s.values else "", s.label(keys), seeds, value)
        out.append(table)
    return out
