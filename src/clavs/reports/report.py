"""`clavs report RUNS --out DIR`: the benchmark tables and the paper's figures of a folder of runs as
one self-contained HTML page, DIR/index.html, with every figure also as PNG and SVG in DIR/figures/.

Sections: the tables (reports/benchmark_table.py), Figure 4 (forward transfer vs forgetting, TIL and
DIL), Figure 5 (Max-F accuracy matrices, CIL), Figure 6 (radar profiles, each axis defined on the
page), every method's anytime-accuracy curve (task-free runs, mean over seeds), Figure 3 (qualitative
overlays from the runs' last checkpoints), and per run its files and (folded) its anytime-accuracy
curve. A figure that has no runs to show is replaced by a note saying why.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from clavs.metrics.names import METRIC_TITLES
from clavs.protocols.scenario import PROTOCOL_NAMES
from clavs.reports.collect import ReportRuns, collect_runs
from clavs.reports.figures import SavedFigure
from clavs.reports.html import Page, Section, esc, figure_html, notes_html, relative_link, table_html
from clavs.reports.paper_figures import (HEATMAP_PROTOCOL, TRANSFER_PROTOCOLS, plot_anytime, plot_anytime_methods,
                                         plot_heatmaps, plot_transfer_forgetting)
from clavs.reports.radar import AXES, FLOOR, plot_radar, radar_profiles
from clavs.utils.io import atomic_write_text

FIGURES_DIR = "figures"
RUN_FILES = ("config.yaml", "scenario.json", "matrices.json", "summary.json", "matrices_val.json",
             "summary_val.json", "profile.json", "anytime.json", "log.txt", "checkpoints")


@dataclass
class ReportOptions:
    metric: str = "map"               # tables, Figure 4, Figure 6
    heatmap_metric: str = "maxf"      # Figure 5 (the paper shows Max-F)
    qualitative: bool = True          # Figure 3 needs checkpoints and the dataset tree
    qualitative_protocol: str | None = None  # default: cil when present, else the first protocol
    methods: list[str] | None = None  # Figure 3's methods (labels or names); default the 4 best by AA
    clips_per_task: int = 2


@dataclass
class Report:
    index: Path
    figures: dict[str, SavedFigure] = field(default_factory=dict)  # kind -> figure (anytime: per run)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _num(mean: float, std: float | None = None, n: int = 1) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f} ± {std:.2f}" if std is not None and n > 1 and not math.isnan(std) else f"{mean:.2f}"


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def build_report(runs_dir: str | os.PathLike, out_dir: str | os.PathLike, options: ReportOptions | None = None,
                 log: Callable[[str], None] = lambda message: None) -> Report:
    """Write out_dir/index.html and out_dir/figures/*.{png,svg}; return what was written and the notes."""
    from clavs.metrics.names import MATRIX_METRICS

    opts = options or ReportOptions()
    for name, value in (("--metric", opts.metric), ("--heatmap-metric", opts.heatmap_metric)):
        if value not in MATRIX_METRICS:
            raise ValueError(f"{name} {value!r} is not a metric; choose one of {', '.join(MATRIX_METRICS)}")
    if opts.clips_per_task < 1:
        raise ValueError(f"--clips must be at least 1, got {opts.clips_per_task}")
    start = time.perf_counter()
    runs_dir, out = Path(runs_dir), Path(out_dir)
    runs = collect_runs(runs_dir, opts.metric)
    figures_dir = out / FIGURES_DIR
    report = Report(index=out / "index.html")
    page = Page(title="clavs report", meta=_meta(runs, runs_dir, opts))

    log("tables")
    page.sections.append(_tables(runs_dir, opts))
    log("Figure 4: forward transfer vs forgetting")
    page.sections.append(_figure4(runs, opts, figures_dir, out, report))
    log("Figure 5: accuracy-matrix heatmaps")
    page.sections.append(_figure5(runs, opts, figures_dir, out, report))
    log("Figure 6: radar profiles")
    page.sections.append(_figure6(runs, opts, figures_dir, out, report))
    log("anytime accuracy")
    page.sections.append(_anytime(runs, opts, figures_dir, out, report))
    log("Figure 3: qualitative overlays")
    page.sections.append(_figure3(runs, opts, figures_dir, out, report))
    log("runs")
    page.sections.append(_per_run(runs, opts, figures_dir, out, report))
    if report.notes:
        page.sections.insert(0, Section("notes", "Notes", notes_html(report.notes)))
    atomic_write_text(report.index, page.render())
    report.seconds = time.perf_counter() - start
    return report


def _meta(runs: ReportRuns, runs_dir: Path, opts: ReportOptions) -> str:
    done = sum(1 for r in runs.all_runs if r.done)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<p>Runs in <code>{esc(runs_dir.resolve())}</code>: {done} finished of {len(runs.all_runs)} run "
            f"directories, {len(runs.groups)} configurations (mean ± std over seeds). Metric "
            f"<b>{esc(METRIC_TITLES.get(opts.metric, opts.metric))}</b> (x100) for the tables and Figures 4 and 6; "
            f"Figure 5 shows {esc(METRIC_TITLES.get(opts.heatmap_metric, opts.heatmap_metric))}. Made {stamp} by "
            f"<code>clavs report</code>; docs/report.md describes every figure.</p>")


def _tables(runs_dir: Path, opts: ReportOptions) -> Section:
    from clavs.reports.benchmark_table import build_benchmark_table

    table = build_benchmark_table(runs_dir, metric=opts.metric)
    if table.empty:
        return Section("tables", "Tables", notes_html(["no finished run to tabulate"]))
    return Section("tables", "Tables", table.render("html"))


def _figure_section(anchor: str, title: str, fig: SavedFigure | None, missing: str, report: Report, page_dir: Path,
                    caption: str = "", extra: str = "") -> Section:
    """A figure with its caption (and `extra` HTML after it), or the note `missing` when there is no figure."""
    if fig is None:
        return Section(anchor, title, notes_html([missing]))
    report.figures[anchor] = fig
    return Section(anchor, title, figure_html(fig, caption, page_dir, alt=title) + extra)


def _figure4(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    fig = plot_transfer_forgetting(runs.groups, opts.metric, fig_dir)
    name = esc(METRIC_TITLES.get(opts.metric, opts.metric))
    caption = (f"One point per method (mean over seeds; bars ± std when there are several), one panel per protocol. "
               f"Forgetting = mean over tasks j &lt; T-1 of the best earlier score on j minus the final one; "
               f"FWT = mean over j ≥ 1 of R[j-1][j] − b[j] (the score on task j just before training it, minus "
               f"its score before any training). Both on {name}, from each run's summary.json.")
    rows = [[esc(p.upper()), esc(g.label), esc(len(g.runs)), _num(g.mean("forgetting"), g.std("forgetting"), len(g.runs)),
             _num(g.mean("fwt"), g.std("fwt"), len(g.runs))]
            for p in TRANSFER_PROTOCOLS for g in runs.of_protocol(p)]
    data = table_html(["protocol", "method", "seeds", "Forgetting", "FWT"], rows, numeric={2, 3, 4})
    return _figure_section("fig4", "Figure 4: forward transfer vs forgetting (TIL, DIL)", fig,
                           "no finished TIL or DIL run: Figure 4 needs one", report, page_dir, caption, data)


def _figure5(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    name = METRIC_TITLES.get(opts.heatmap_metric, opts.heatmap_metric)
    fig = plot_heatmaps(runs.groups, opts.heatmap_metric, fig_dir)
    caption = (f"R[t][j] of {esc(name)} per method: row t = after training task t, column j = the test clips of "
               f"task j (blank: not evaluated; the cell right of the diagonal is the next task, before training "
               f"it). Averaged element-wise over seeds.")
    return _figure_section("fig5", f"Figure 5: {name} accuracy matrices ({HEATMAP_PROTOCOL.upper()})", fig,
                           f"no finished {HEATMAP_PROTOCOL.upper()} run with {name}: Figure 5 needs one", report,
                           page_dir, caption)


def _figure6(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    panels = [(p, radar_profiles(runs.of_protocol(p))) for p in runs.protocols]
    fig = plot_radar(panels, fig_dir)
    name = esc(METRIC_TITLES.get(opts.metric, opts.metric))
    caption = (f"One panel per protocol, one polygon per method. Each axis is normalised across the methods of its "
               f"panel by min-max onto [{FLOOR}, 1]: n(v) = {FLOOR} + {1 - FLOOR:.1f}·(v − min)/(max − min), so the best "
               f"method reaches the rim; equal values (or one method) give 1; a missing value is drawn at 0.")
    axes = table_html(["axis", "raw value (higher is better)"],
                      [[esc(a.title), esc(a.definition)] for a in AXES])
    raw_rows = []
    for protocol, profiles in panels:
        for prof in profiles:
            cells = []
            for a in AXES:
                v = prof.raw[a.key]
                shown = ("n/a" if math.isnan(v) else f"{1.0 / v:,.0f} params" if a.key == "memory"
                         else f"{v:.1f}")
                cells.append(f"{esc(shown)} ({prof.normalised[a.key]:.2f})")
            raw_rows.append([esc(protocol.upper()), esc(prof.label), *cells])
    raw = table_html(["protocol", "method", *[esc(a.title) for a in AXES]], raw_rows, numeric=set(range(2, 2 + len(AXES))))
    text = (f"<p>Accuracy, retention, plasticity and stability are on {name}; speed and memory come from each "
            f"run's profile.json. Raw values (normalised in brackets):</p>")
    return _figure_section("fig6", "Figure 6: normalised radar profiles", fig, "no finished run: Figure 6 needs one",
                           report, page_dir, caption, axes + text + raw)


def _figure3(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    from clavs.reports.qualitative import plot_overlays

    title = "Figure 3: qualitative results"
    if not opts.qualitative:
        return Section("fig3", title, notes_html(["Figure 3 not made (--no-qualitative)"]))
    protocols = runs.protocols
    if not protocols:
        return Section("fig3", title, notes_html(["no finished run: Figure 3 needs one"]))
    protocol = opts.qualitative_protocol or ("cil" if "cil" in protocols else protocols[0])
    fig, notes = plot_overlays(runs.groups, fig_dir, protocol=protocol, methods=opts.methods,
                               clips_per_task=opts.clips_per_task)
    report.notes.extend(notes)
    caption = (f"{esc(PROTOCOL_NAMES.get(protocol, protocol))} ({esc(protocol.upper())}): the first "
               f"{opts.clips_per_task} test clips of the first and of the last task (their middle labelled frame); "
               f"ground truth in green, each method's prediction after the last task (its run's last checkpoint; "
               f"sigmoid &gt; 0.5) in red, with the frame's IoU.")
    return _figure_section("fig3", title, fig, "; ".join(notes), report, page_dir, caption, notes_html(notes))


def _anytime(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    fig = plot_anytime_methods(runs.groups, opts.metric, fig_dir)
    name = esc(METRIC_TITLES.get(opts.metric, opts.metric))
    caption = (f"Each method's {name} on the test clips of the tasks seen so far, at every anytime evaluation of its "
               f"task-free runs, averaged over seeds at the training steps all of them evaluated (x: the mean clips "
               f"seen there). The legend gives the mean A_auc, best first; each run's own curve is under Runs.")
    return _figure_section("anytime", "Anytime accuracy (task-free TF-CL)", fig,
                           "no run has an anytime-accuracy curve (only task-free TF-CL runs with "
                           "protocol.anytime_every > 0 record one)", report, page_dir, caption)


def _per_run(runs: ReportRuns, opts: ReportOptions, fig_dir: Path, page_dir: Path, report: Report) -> Section:
    name = METRIC_TITLES.get(opts.metric, opts.metric)
    by_path = {str(run["path"]): (g, run) for g in runs.groups for run in g.runs}
    rows, curves = [], []
    for info in runs.all_runs:
        links = " ".join(f'<a href="{esc(relative_link(info.path / f, page_dir))}">{esc(f)}</a>'
                         for f in RUN_FILES if (info.path / f).exists())
        found = by_path.get(str(info.path))
        aa = (found[1]["summary"].get(opts.metric) or {}).get("aa") if found else None
        rows.append([esc(info.experiment), esc(info.protocol), esc(info.method), esc(info.seed),
                     "done" if info.done else "unfinished", _num(aa) if isinstance(aa, (int, float)) else "",
                     f'<a href="{esc(relative_link(info.path, page_dir))}">{esc(info.path.name)}</a><br>{links}'])
        if found:
            group, run = found
            stem = _stem(f"anytime_{info.experiment}_{info.protocol}_{info.method}_{info.path.name}")  # the folder names the seed
            fig = plot_anytime(run, opts.metric, f"{group.label} ({info.protocol.upper()}), seed {info.seed}",
                               fig_dir, stem)
            if fig is not None:
                report.figures[stem] = fig
                curves.append(figure_html(fig, f"Anytime accuracy of <code>{esc(info.path.name)}</code>: {esc(name)} on "
                                               f"the test clips of the tasks seen so far, after each evaluation; the "
                                               f"area under the steps over the clips seen is A_auc.",
                                          page_dir, alt=f"anytime accuracy {info.path.name}"))
    body = table_html(["experiment", "protocol", "method", "seed", "status", f"AA {esc(name)}", "run directory and files"],
                      rows, numeric={3, 5})
    if runs.damaged:
        body += "<p>Damaged run directories, left out:</p>" + notes_html([f"{p}: {why}" for p, why in runs.damaged])
    if curves:  # folded: one per run (33 in a Table 1 sweep); the anytime section draws them together
        body += (f"<details><summary>Anytime-accuracy curves of each run ({len(curves)})</summary>"
                 + "".join(curves) + "</details>")
    return Section("runs", "Runs", body)

