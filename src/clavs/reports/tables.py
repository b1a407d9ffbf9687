"""Readable terminal tables of a run: the accuracy matrix of a metric and the continual summary."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from clavs.metrics.names import METRIC_TITLES, SUMMARY_KEYS


def _fmt(x: Any) -> str:
    return "·" if x is None else f"{x:.2f}"


def matrix_table(matrices: dict[str, Any], metric: str = "map") -> Table:
    """R[t][j]: row = after training task t, column = evaluated on task j; b = before task 0."""
    m = matrices["metrics"][metric]
    T = matrices["tasks"]
    table = Table(title=f"{METRIC_TITLES.get(metric, metric)} accuracy matrix R[t][j] (x100)")
    table.add_column("after task", justify="right")
    for j in range(T):
        table.add_column(f"T{j}", justify="right")
    if m.get("b") is not None:
        table.add_row("b (init)", *[_fmt(v) for v in m["b"]], style="dim")
    for t, row in enumerate(m["R"]):
        table.add_row(f"{t}", *[_fmt(v) for v in row])
    return table


def summary_table(summary: dict[str, Any], metrics: tuple[str, ...] = ("map", "maxf", "miou", "aupr", "dice", "f1", "acc")) -> Table:
    table = Table(title="continual summary (x100)")
    table.add_column("metric")
    for _, title in SUMMARY_KEYS:
        table.add_column(title, justify="right")
    for name in metrics:
        if name in summary:
            table.add_row(METRIC_TITLES.get(name, name), *[_fmt(summary[name].get(k)) for k, _ in SUMMARY_KEYS])
    return table
