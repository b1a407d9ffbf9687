"""The paper's tables from a folder of runs: Table 1 (methods x protocols) and Table 2 (ablations).

Table 1: one row per method (grouped by family, a dagger on methods that store exemplars), one column
pair per protocol: "Avg <metric>" = AA and "Avg For" = Forgetting of the chosen metric, each the mean
± sample std over the seeds of that cell (no ± when one seed). Table 2 appears when runs of one method
differ by boolean hyperparameters (ablation switches such as `method.lra`): one row per switch
combination, a column per switch, and per protocol AA and Forgetting of the metric plus the AA of F1
and mIoU, as in the paper. Only the row with every switch at the method's default enters Table 1.

Best per column (highest AA, lowest Forgetting, compared at the printed precision, ties all marked) is
bold in md/latex/html and a `*_best` column in csv. A cell without finished runs is "—" (empty in
csv), never 0; a value a run could not define (Forgetting of a one-task stream) is "n/a".
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clavs.metrics.names import METRIC_TITLES
from clavs.protocols.scenario import PROTOCOLS
from clavs.results.aggregate import aggregate

FORMATS = ("md", "latex", "csv", "html")
FAMILY_ORDER = ("baseline", "cl", "avs", "css", "replay", "atlas")
FAMILY_SHORT = {"baseline": "baseline", "cl": "CL", "avs": "AVS", "css": "CSS", "replay": "replay", "atlas": "ours"}
PROTOCOL_TITLES = {"til": "TIL", "cil": "CIL", "dil": "DIL", "tfcl": "TF-CL"}
TABLE2_EXTRA_METRICS = ("f1", "miou")  # the paper's Table 2 adds Avg F1 and Avg mIoU
MISSING, UNDEFINED = "—", "n/a"


@dataclass
class Cell:
    """mean ± std over `n` seeds; n == 0: no finished run; NaN mean with n > 0: undefined value."""

    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    best: bool = False

    @property
    def missing(self) -> bool:
        return self.n == 0

    def text(self, pm: str = "±") -> str:
        if self.missing:
            return MISSING
        if math.isnan(self.mean):
            return UNDEFINED
        return f"{self.mean:.2f} {pm} {self.std:.2f}" if self.n > 1 else f"{self.mean:.2f}"


@dataclass(frozen=True)
class Column:
    protocol: str
    metric: str
    key: str  # "aa" or "forgetting"

    @property
    def title(self) -> str:
        return "Avg For" if self.key == "forgetting" else f"Avg {METRIC_TITLES.get(self.metric, self.metric)}"

    @property
    def slug(self) -> str:  # csv column stem, e.g. cil_map_aa
        return f"{self.protocol}_{self.metric}_{self.key}"

    @property
    def higher_is_better(self) -> bool:
        return self.key != "forgetting"


@dataclass
class Row:
    experiment: str
    method: str
    label: str
    family: str
    uses_exemplars: bool
    switches: dict[str, bool]
    cells: list[Cell]


@dataclass
class Section:
    kind: str  # "table1" or "table2"
    title: str
    groups: list[tuple[str, int]]  # (protocol heading, number of columns) in column order
    columns: list[Column]
    switch_names: list[str]
    rows: list[Row] = field(default_factory=list)


@dataclass
class BenchmarkTable:
    metric: str
    split: str
    sections: list[Section]

    @property
    def empty(self) -> bool:
        return not any(s.rows for s in self.sections)

    def caption(self, section: Section) -> str:
        return (f"{section.title}: {METRIC_TITLES.get(self.metric, self.metric)} on {self.split} clips, x100; "
                f"Avg = AA, Avg For = Forgetting; mean ± std over seeds (no ± = one seed); "
                f"† stores exemplars; best per column in bold; {MISSING} = no finished run")

    def render(self, fmt: str) -> str:
        """The table as Markdown, a LaTeX tabular body, CSV, or an HTML <table> fragment."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown table format '{fmt}'; choose one of {', '.join(FORMATS)}")
        if fmt == "csv":
            return _render_csv(self)
        render = {"md": _render_md, "latex": _render_latex, "html": _render_html}[fmt]
        return "\n".join(render(self, s) for s in self.sections if s.rows)

    def rich_tables(self) -> list[Any]:
        """The sections as rich Tables, for the terminal."""
        from rich.table import Table

        out = []
        for s in (s for s in self.sections if s.rows):
            table = Table(title=self.caption(s))
            for name in ("family", "method", *s.switch_names):
                table.add_column(name)
            for c in s.columns:
                table.add_column(f"{_group_of(s, c)}\n{c.title}", justify="right")
            for r in s.rows:
                table.add_row(FAMILY_SHORT.get(r.family, r.family), _method_text(r, " †"),
                              *[_switch_text(r.switches.get(n), "✓", "✗") for n in s.switch_names],
                              *[f"[bold]{c.text()}[/bold]" if c.best else c.text() for c in r.cells])
            out.append(table)
        return out


def build_benchmark_table(runs_dir: str | os.PathLike, *, metric: str = "map", split: str = "test",
                          damaged: list[tuple[Path, str]] | None = None) -> BenchmarkTable:
    """Table 1 (and Table 2 when some method has ablation variants) of the finished runs under runs_dir."""
    rows = aggregate(runs_dir, metric, split=split, damaged=damaged)
    experiments = sorted({r["experiment"] for r in rows})
    extra: dict[str, list[dict[str, Any]]] = {}
    sections: list[Section] = []
    for experiment in experiments:
        mine = [r for r in rows if r["experiment"] == experiment]
        suffix = f" (experiment {experiment})" if len(experiments) > 1 else ""
        switches = _switch_keys(mine)
        table1 = [r for r in mine if _all_default(r, switches.get(r["method"], []))]
        sections.append(_section("table1", f"Table 1{suffix}", experiment, table1, {metric: table1}, metric, [],
                                 switches))
        ablated = [r for r in mine if len({_switch_values(x, switches.get(r["method"], [])) for x in mine
                                           if x["method"] == r["method"]}) > 1]
        if ablated:
            for m in TABLE2_EXTRA_METRICS:
                if m != metric and m not in extra:
                    extra[m] = aggregate(runs_dir, m, split=split)
            by_metric = {metric: ablated, **{m: [x for x in extra.get(m, []) if x["experiment"] == experiment]
                                             for m in TABLE2_EXTRA_METRICS if m != metric}}
            names = sorted({k for r in ablated for k in switches[r["method"]]})
            sections.append(_section("table2", f"Table 2 (ablations){suffix}", experiment, ablated, by_metric,
                                     metric, names, switches))
    return BenchmarkTable(metric=metric, split=split, sections=sections)


def _switch_keys(rows: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per method: the boolean `method.*` values that tell its rows apart (its ablation switches)."""
    out: dict[str, set[str]] = {}
    for r in rows:
        for key, value in r["variant"].items():
            if key.startswith("method.") and isinstance(value, bool):
                out.setdefault(r["method"], set()).add(key)
    return {m: sorted(keys) for m, keys in out.items()}


def _flat_value(row: dict[str, Any], dotted: str) -> Any:
    node: Any = row.get("config") or {}
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _switch_values(row: dict[str, Any], keys: list[str]) -> tuple[Any, ...]:
    return tuple(_flat_value(row, k) for k in keys)


_UNKNOWN = object()


def _method_default(method: str, key: str, unknown: Any = _UNKNOWN) -> Any:
    """The method's declared default of `method.<name>` (`unknown` when the method is not registered
    here or has no such hyperparameter)."""
    from clavs.methods import get_method_class

    try:
        return get_method_class(method).default_hparams({}).get(key.split(".", 1)[1], unknown)
    except ValueError:
        return unknown


def _default_switch(method: str, key: str) -> Any:
    """The method's declared default of a switch (True when the method is not registered here)."""
    return _method_default(method, key, True)


def _all_default(row: dict[str, Any], keys: list[str]) -> bool:
    return all(_flat_value(row, k) == _default_switch(row["method"], k) for k in keys)


def _identity(row: dict[str, Any], switch_keys: list[str]) -> str:
    """A row's label without its switches: the method plus any other value that sets it apart."""
    # A method's hyperparameter at its declared default names no variant: the default row of a method
    # is one row across protocols even where a validation grid put other values beside it.
    rest = {k: v for k, v in row["variant"].items() if k not in switch_keys
            and not (k.startswith("method.") and _method_default(row["method"], k) == v)}
    return row["method"] + "".join(f" {k}={_short(v)}" for k, v in rest.items())


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _section(kind: str, title: str, experiment: str, rows: list[dict[str, Any]], by_metric: dict[str, list],
             metric: str, switch_names: list[str], switches: dict[str, list[str]]) -> Section:
    protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in rows)]
    protocols += sorted({r["protocol"] for r in rows} - set(protocols))
    extras = [m for m in by_metric if m != metric and by_metric[m]] if kind == "table2" else []
    columns = [Column(p, m, key) for p in protocols
               for m, key in [(metric, "aa"), (metric, "forgetting")] + [(m, "aa") for m in extras]]
    groups = [(_protocol_heading(p, rows), sum(c.protocol == p for c in columns)) for p in protocols]

    # A table row per identity (label without switches, and the switch values in Table 2); the
    # aggregate rows of the other metrics are the same configs, so they line up by config hash.
    identity = {r["config_hash"]: (_identity(r, switches.get(r["method"], [])),
                                   _switch_values(r, switch_names) if kind == "table2" else ()) for r in rows}
    meta: dict[tuple, dict[str, Any]] = {}
    found: dict[tuple, dict[Column, Cell]] = {}
    for m, metric_rows in by_metric.items():
        for r in metric_rows:
            k = identity.get(r["config_hash"])
            if k is None:
                continue
            meta.setdefault(k, r)
            for c in columns:
                if c.protocol == r["protocol"] and c.metric == m:
                    mean, std = r[c.key]
                    found.setdefault(k, {})[c] = Cell(mean, std, len(r["seeds"]))
    out = [Row(experiment=experiment, method=r["method"], label=k[0], family=r["family"],
               uses_exemplars=r["uses_exemplars"], switches=dict(zip(switch_names, k[1])),
               cells=[found.get(k, {}).get(c, Cell()) for c in columns]) for k, r in meta.items()]
    out.sort(key=lambda row: (FAMILY_ORDER.index(row.family) if row.family in FAMILY_ORDER else len(FAMILY_ORDER),
                              row.label, [row.switches.get(n) is not True for n in switch_names]))
    _mark_best(out, columns)
    return Section(kind=kind, title=title, groups=groups, columns=columns, switch_names=switch_names, rows=out)


def _protocol_heading(protocol: str, rows: list[dict[str, Any]]) -> str:
    splits = {str(_flat_value(r, "protocol.split")) for r in rows if r["protocol"] == protocol}
    title = PROTOCOL_TITLES.get(protocol, protocol)
    return f"{title} {splits.pop()}" if len(splits) == 1 and "None" not in splits else title


def _mark_best(rows: list[Row], columns: list[Column]) -> None:
    for i, c in enumerate(columns):
        values = [round(r.cells[i].mean, 2) for r in rows if not math.isnan(r.cells[i].mean)]
        if not values:
            continue
        best = max(values) if c.higher_is_better else min(values)
        for r in rows:
            r.cells[i].best = not math.isnan(r.cells[i].mean) and round(r.cells[i].mean, 2) == best


def _method_text(row: Row, dagger: str) -> str:
    return row.label + (dagger if row.uses_exemplars else "")


def _switch_text(value: Any, yes: str, no: str) -> str:
    return yes if value is True else no if value is False else "-"


# -- renderers ----------------------------------------------------------------------------------
def _render_md(table: BenchmarkTable, s: Section) -> str:
    head = ["Family", "Method", *s.switch_names, *[f"{_group_of(s, c)} {c.title}" for c in s.columns]]
    lines = [f"**{table.caption(s)}**", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * 2 + ":---:|" * len(s.switch_names) + "---:|" * len(s.columns)]
    for r in s.rows:
        cells = [f"**{c.text()}**" if c.best else c.text() for c in r.cells]
        lines.append("| " + " | ".join([FAMILY_SHORT.get(r.family, r.family), _method_text(r, " †"),
                                        *[_switch_text(r.switches.get(n), "✓", "✗") for n in s.switch_names],
                                        *cells]) + " |")
    return "\n".join(lines) + "\n"


def _group_of(s: Section, column: Column) -> str:
    i = s.columns.index(column)
    for heading, span in s.groups:
        if i < span:
            return heading
        i -= span
    return column.protocol


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _render_latex(table: BenchmarkTable, s: Section) -> str:
    lead = 2 + len(s.switch_names)
    spec = "ll" + "c" * len(s.switch_names) + "r" * len(s.columns)
    groups = " & ".join(rf"\multicolumn{{{span}}}{{c}}{{{latex_escape(h)}}}" for h, span in s.groups)
    titles = ["Family", "Method", *[latex_escape(n.split(".", 1)[-1]) for n in s.switch_names],
              *[latex_escape(c.title) for c in s.columns]]
    ascii_caption = table.caption(s).replace("±", "+/-").replace("†", "dagger").replace(MISSING, "---")
    lines = [f"% {ascii_caption}", rf"\begin{{tabular}}{{{spec}}}", r"\hline",
             rf"\multicolumn{{{lead}}}{{l}}{{}} & {groups} \\", " & ".join(titles) + r" \\", r"\hline"]
    family = None
    for r in s.rows:
        if family is not None and r.family != family:
            lines.append(r"\hline")
        family = r.family
        cells = []
        for c in r.cells:
            text = "---" if c.missing else c.text(pm=r"$\pm$")  # digits only: nothing to escape
            cells.append(rf"\textbf{{{text}}}" if c.best else text)
        lines.append(" & ".join([latex_escape(FAMILY_SHORT.get(r.family, r.family)),
                                 latex_escape(r.label) + (r"$^\dagger$" if r.uses_exemplars else ""),
                                 *[_switch_text(r.switches.get(n), r"$\surd$", r"$\times$") for n in s.switch_names],
                                 *cells]) + r" \\")
    lines += [r"\hline", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _render_html(table: BenchmarkTable, s: Section) -> str:
    e = html.escape
    lead = 2 + len(s.switch_names)
    out = [f'<table class="clavs-benchmark {s.kind}">', f"<caption>{e(table.caption(s))}</caption>", "<thead>",
           f'<tr><th colspan="{lead}"></th>' + "".join(f'<th colspan="{span}">{e(h)}</th>' for h, span in s.groups)
           + "</tr>",
           "<tr><th>Family</th><th>Method</th>" + "".join(f"<th>{e(n)}</th>" for n in s.switch_names)
           + "".join(f"<th>{e(c.title)}</th>" for c in s.columns) + "</tr>", "</thead>", "<tbody>"]
    for r in s.rows:
        cells = "".join(f'<td class="{"missing" if c.missing else "value"}">'
                        + (f"<strong>{e(c.text())}</strong>" if c.best else e(c.text())) + "</td>" for c in r.cells)
        switches = "".join(f"<td>{_switch_text(r.switches.get(n), '✓', '✗')}</td>" for n in s.switch_names)
        out.append(f'<tr class="family-{e(r.family)}"><td>{e(FAMILY_SHORT.get(r.family, r.family))}</td>'
                   f"<td>{e(_method_text(r, ' †'))}</td>{switches}{cells}</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out) + "\n"


def _render_csv(table: BenchmarkTable) -> str:
    """One line per row of every section; numbers unrounded, empty where there is no value."""
    switch_names = sorted({n for s in table.sections for n in s.switch_names})
    stems = list(dict.fromkeys(c.slug for s in table.sections for c in s.columns))
    fields = ["table", "experiment", "family", "method", "label", "uses_exemplars", *switch_names]
    for stem in stems:
        fields += [f"{stem}_mean", f"{stem}_std", f"{stem}_seeds", f"{stem}_best"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for s in table.sections:
        for r in s.rows:
            line: dict[str, Any] = {"table": s.kind, "experiment": r.experiment, "family": r.family,
                                    "method": r.method, "label": r.label, "uses_exemplars": int(r.uses_exemplars),
                                    **{n: "" if r.switches.get(n) is None else int(r.switches[n]) for n in s.switch_names}}
            for c, cell in zip(s.columns, r.cells):
                defined = not cell.missing and not math.isnan(cell.mean)
                line.update({f"{c.slug}_mean": repr(cell.mean) if defined else "",
                             f"{c.slug}_std": repr(cell.std) if defined else "",
                             f"{c.slug}_seeds": cell.n, f"{c.slug}_best": int(cell.best)})
            writer.writerow(line)
    return buf.getvalue()
