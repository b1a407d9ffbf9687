"""One sweep job: `python -m clavs run <argv>` in its own process, its output in the run's sweep.log.

A process per job: a crash, an OOM kill or a diverged training ends that job only. `run_job` is
what both launchers execute (local threads, and submitit's workers on SLURM or this machine); it
never raises for a failed run, it reports it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from clavs.launch.grid import Job
from clavs.results.store import RunDir


ATTEMPT_MARK = "clavs sweep job"  # heads each attempt's output in sweep.log


@dataclass(frozen=True)
class JobResult:
    job: Job
    status: str  # "done" or "failed"
    returncode: int | None
    seconds: float
    log: Path
    reason: str = ""  # the last line the failed job wrote (its `error: ...` line)


def command(job: Job) -> list[str]:
    return [sys.executable, "-m", "clavs", "run", *job.argv]


def run_job(job: Job, gpu: str | None = None) -> JobResult:
    """Run one job to its end; `gpu` (a CUDA device index) becomes its only visible device."""
    start = time.perf_counter()
    log = job.log_path
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
            gpu_note = f" (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else ""
            out.write(f"[{stamp}] {ATTEMPT_MARK}{gpu_note}: {' '.join(command(job))}\n")
            out.flush()
            code = subprocess.run(command(job), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, cwd=job.cwd).returncode
    except OSError as e:  # the run directory or its log cannot be written
        from clavs.errors import os_error_message

        return JobResult(job, "failed", None, time.perf_counter() - start, log, os_error_message(e))
    seconds = time.perf_counter() - start
    if code == 0 and RunDir(job.run_dir).done:
        return JobResult(job, "done", code, seconds, log)
    if code == 0:
        reason = f"exited 0 but {job.run_dir} has no DONE marker"
    elif code < 0:  # e.g. the kernel's OOM killer
        reason = f"killed by signal {-code}; last line: {_error_line(log)}"
    else:
        reason = _error_line(log)
    return JobResult(job, "failed", code, seconds, log, reason)


def _error_line(path: Path, limit: int = 300) -> str:
    """The `error: ...` line (the CLI's one-line message) of the job's latest attempt, else its last line."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    starts = [i for i, ln in enumerate(lines) if ATTEMPT_MARK in ln]
    lines = lines[starts[-1] + 1:] if starts else lines
    errors = [ln for ln in lines if ln.startswith("error:")]
    text = errors[-1] if errors else lines[-1] if lines else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."
