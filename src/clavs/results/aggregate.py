"""Aggregate finished runs over seeds: one row per resolved config without its seed.

Runs that differ in anything but the seed (an ablation switch, a hyperparameter, the split) are
different rows, never averaged together. A row is labelled by its method plus the config values in
which it differs from the other rows of the same experiment, protocol and method
(e.g. `atlas method.lra=false`).
"""

from __future__ import annotations

import copy
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from clavs.config import flatten
from clavs.errors import RunDirError
from clavs.metrics.names import ANYTIME_KEY, SUMMARY_KEYS
from clavs.results.store import HASH_EXCLUDED, config_hash, list_runs, load_run


def config_without_seed(config: dict[str, Any]) -> dict[str, Any]:
    pruned = copy.deepcopy(config)
    pruned.pop("seed", None)
    return pruned


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def aggregate(runs_dir: str | os.PathLike, metric: str = "map", split: str = "test",
              damaged: list[tuple[Path, str]] | None = None) -> list[dict[str, Any]]:
    """Rows: experiment, protocol, method, variant (the differing config values), label, family,
    uses_exemplars, seeds, config (of the row's first run), and (mean, std) of every continual summary value of `metric` on `split`.

    A finished run whose files cannot be read is left out; `damaged` (if given) receives (path, reason).
    """
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for info in list_runs(runs_dir, done_only=True, damaged=damaged):
        try:
            run = load_run(info.path)
            summary = run["summary"] if split == "test" else run["summary_val"]
            if not isinstance(summary, dict) or not isinstance(run["profile"], dict):
                raise RunDirError(f"{info.path}: summary or profile is not a JSON object")
            if metric not in summary:
                continue
            values = summary[metric]
            if not isinstance(values, dict) or not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
                                                       for v in values.values()):
                raise RunDirError(f"{info.path}: the summary of '{metric}' is not a table of numbers")
        except (RunDirError, OSError) as e:
            if damaged is not None:
                damaged.append((info.path, str(e)))
            continue
        key = config_hash(config_without_seed(run["config"]))
        groups[key].append({"info": info, "config": run["config"], "method": run["profile"].get("method", {}),
                            "summary": summary[metric]})
    # Which config values tell the groups of one (experiment, protocol, method) apart.
    flat = {k: flatten(config_without_seed(items[0]["config"])) for k, items in groups.items()}
    siblings: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    for k, items in groups.items():
        i = items[0]["info"]
        siblings[(i.experiment, i.protocol, i.method)].append(k)
    rows = []
    for (experiment, protocol, method), keys in sorted(siblings.items()):
        # Keys left out of the hash (train.val_matrix, ...) do not set groups apart: never in a label.
        differing = sorted({name for k in keys for name in flat[k]
                            if name not in HASH_EXCLUDED and len({repr(flat[o].get(name)) for o in keys}) > 1})
        for k in keys:
            items = groups[k]
            variant = {name: flat[k].get(name) for name in differing}
            label = method + "".join(f" {n}={_short(v)}" for n, v in variant.items())
            info = items[0]["method"]
            row: dict[str, Any] = {"experiment": experiment, "protocol": protocol, "method": method,
                                   "variant": variant, "label": label, "family": info.get("family", "?"),
                                   "uses_exemplars": bool(info.get("uses_exemplars", False)),
                                   "seeds": sorted(i["info"].seed for i in items), "config_hash": k,
                                   "config": items[0]["config"]}
            for key, _ in SUMMARY_KEYS + (ANYTIME_KEY,):
                row[key] = _mean_std([i["summary"].get(key) for i in items])
            rows.append(row)
    rows.sort(key=lambda r: (r["experiment"], r["protocol"], r["method"], r["label"]))
    return rows


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
