"""Run a sweep: skip the jobs whose run directory is DONE, launch the others (an unfinished run
resumes from its last checkpoint: that is `clavs run`'s own behaviour), show the sweep's progress as
a whole, and end with done / failed / skipped and every failure's log."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from rich.markup import escape

from clavs.launch.grid import Job
from clavs.launch.jobs import JobResult
from clavs.results.store import CONFIG_FILE, RunDir


@dataclass
class SweepReport:
    skipped: list[Job] = field(default_factory=list)  # finished before the sweep started
    results: list[JobResult] = field(default_factory=list)

    @property
    def done(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "done"]

    @property
    def failed(self) -> list[JobResult]:
        return [r for r in self.results if r.status == "failed"]

    def summary(self) -> str:
        return f"sweep: {len(self.done)} done, {len(self.failed)} failed, {len(self.skipped)} skipped (already done)"


def job_status(job: Job) -> str:
    run = RunDir(job.run_dir)
    if run.done:
        return "done"
    return "unfinished" if (run.path / CONFIG_FILE).exists() else "new"


def run_sweep(jobs: list[Job], launcher: Any, console: Any, *, progress: bool = True) -> SweepReport:
    finished = {j.run_dir for j in jobs if RunDir(j.run_dir).done}
    report = SweepReport(skipped=[j for j in jobs if j.run_dir in finished])
    todo = [j for j in jobs if j.run_dir not in finished]
    console.print(f"sweep: {len(jobs)} jobs, {len(report.skipped)} already done, {len(todo)} to run "
                  f"({launcher.describe()})")
    if not todo:
        console.print(report.summary())
        return report
    lock = threading.Lock()
    running: set[str] = set()
    started_at = time.perf_counter()
    bar = _progress_bar(console) if progress else None

    def describe() -> str:
        return (f"sweep: {len(report.done)} done · {len(report.failed)} failed · {len(report.skipped)} skipped · "
                f"{len(running)} running")

    def started(job: Job) -> None:
        with lock:
            running.add(job.label)
            if bar is not None:
                bar.update(task, description=describe())

    def finished(result: JobResult) -> None:
        with lock:
            running.discard(result.job.label)
            report.results.append(result)
            if result.status == "done":
                console.print(f"[green]done[/green]   {escape(result.job.label)} ({result.seconds:.0f} s)",
                              soft_wrap=True)
            else:
                console.print(f"[red]FAILED[/red] {escape(result.job.label)}: {escape(result.reason or 'see the log')}; "
                              f"log: {escape(str(result.log))}", soft_wrap=True, highlight=False)
            if bar is not None:
                bar.update(task, advance=1, description=describe())

    if bar is not None:
        with bar:
            task = bar.add_task(describe(), total=len(todo))
            launcher.launch(todo, started, finished)
    else:
        launcher.launch(todo, started, finished)
    console.print(f"{report.summary()} in {time.perf_counter() - started_at:.0f} s")
    for r in report.failed:
        console.print(f"  failed: {r.job.label}\n    log: {r.log}", soft_wrap=True, markup=False)
    return report


def _progress_bar(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console)
