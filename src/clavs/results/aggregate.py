"""Aggregate finished runs over seeds: mean and standard deviation of every summary value."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import Any

from clavs.results.store import list_runs, load_run


def aggregate(runs_dir: str | os.PathLike, metric: str = "map") -> list[dict[str, Any]]:
    """One row per (experiment, protocol, method): seeds, and mean/std of each continual summary value."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for info in list_runs(runs_dir, done_only=True):
        run = load_run(info.path)
        if metric in run["summary"]:
            groups[(info.experiment, info.protocol, info.method)].append({"seed": info.seed, **run["summary"][metric]})
    rows = []
    for (experiment, protocol, method), items in sorted(groups.items()):
        row: dict[str, Any] = {"experiment": experiment, "protocol": protocol, "method": method,
                               "seeds": sorted(i["seed"] for i in items)}
        for key in ("la", "aa", "a_inc", "forgetting", "bwt", "fwt"):
            values = [i[key] for i in items if i.get(key) is not None]
            mean = sum(values) / len(values) if values else math.nan
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
            row[key] = (mean, std)
        rows.append(row)
    return rows
