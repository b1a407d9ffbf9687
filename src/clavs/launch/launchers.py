"""Launchers: hand a sweep's jobs to an existing engine and report each job as it ends.

- `LocalLauncher`: a concurrent.futures thread pool of `--jobs` workers, each waiting on one job's
  process; with visible GPUs, one job per GPU at a time (CUDA_VISIBLE_DEVICES), `--jobs` defaulting
  to the number of GPUs.
- `SubmititLauncher`: submitit job arrays; on SLURM (`slurm_array_parallelism` = --jobs, partition,
  time, GPUs, CPUs, memory) or, with cluster="local", submitit's LocalExecutor on this machine, which
  runs the same code path (the tests use it). The local executor starts every job of an array at
  once, so there the jobs go in arrays of --jobs, one after the other.
"""

from __future__ import annotations

import os
import queue
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from clavs.errors import ClavsError
from clavs.launch.grid import Job
from clavs.launch.jobs import JobResult, run_job

Started = Callable[[Job], None]
Finished = Callable[[JobResult], None]


def visible_gpus() -> list[str]:
    """CUDA device indices this process may use (CUDA_VISIBLE_DEVICES, else every device torch sees)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except ImportError:  # pragma: no cover - torch is a dependency
        return []


class LocalLauncher:
    def __init__(self, jobs: int | None = None, gpus: list[str] | None = None):
        self.gpus = visible_gpus() if gpus is None else gpus
        self.parallel = jobs or max(1, len(self.gpus))
        if self.parallel < 1:
            raise ClavsError(f"--jobs {jobs}: must be at least 1")

    def describe(self) -> str:
        where = f", one per GPU of {','.join(self.gpus)}" if self.gpus else ""
        return f"local, {self.parallel} at once{where}"

    def launch(self, jobs: list[Job], started: Started, finished: Finished) -> list[JobResult]:
        slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.parallel):
            slots.put(slot)

        def work(job: Job) -> JobResult:
            slot = slots.get()
            try:
                started(job)
                return run_job(job, gpu=self.gpus[slot % len(self.gpus)] if self.gpus else None)
            finally:
                slots.put(slot)

        results = []
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="clavs-sweep") as pool:
            futures = [pool.submit(work, job) for job in jobs]
            try:
                for future in as_completed(futures):
                    results.append(future.result())
                    finished(results[-1])
            except KeyboardInterrupt:  # the running jobs' processes got the same Ctrl-C
                for future in futures:
                    future.cancel()
                raise
        return results


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ClavsError("--launcher slurm needs submitit: pip install 'clavs[slurm]' (or pip install submitit)") \
            from None
    return submitit


class SubmititLauncher:
    def __init__(self, folder: str | os.PathLike, *, cluster: str = "slurm", jobs: int | None = None,
                 partition: str | None = None, time_min: int = 24 * 60, gpus_per_job: int = 0,
                 cpus_per_job: int | None = None, mem_gb: float | None = None, poll_seconds: float = 1.0):
        self.submitit = _import_submitit()
        self.folder = Path(folder)
        self.cluster = cluster
        self.parallel = jobs or 1
        self.poll_seconds = poll_seconds
        self.parameters: dict[str, Any] = {"timeout_min": time_min, "gpus_per_node": gpus_per_job,
                                           "name": "clavs-sweep", "slurm_array_parallelism": self.parallel}
        if cpus_per_job:
            self.parameters["cpus_per_task"] = cpus_per_job
        if mem_gb:
            self.parameters["mem_gb"] = mem_gb
        if partition:
            self.parameters["slurm_partition"] = partition

    def describe(self) -> str:
        where = "SLURM job arrays" if self.cluster == "slurm" else "submitit's local executor"
        return f"{where}, {self.parallel} at once; submitit files in {self.folder}"

    def launch(self, jobs: list[Job], started: Started, finished: Finished) -> list[JobResult]:
        executor = self.submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.parameters)
        waves = [jobs] if self.cluster == "slurm" else [jobs[i:i + self.parallel]
                                                        for i in range(0, len(jobs), self.parallel)]
        results: list[JobResult] = []
        for wave in waves:
            handles = executor.map_array(run_job, wave)
            for job in wave:
                started(job)
            pending = dict(zip(handles, wave))
            try:
                while pending:
                    for handle in [h for h in pending if h.done()]:
                        results.append(self._result(handle, pending.pop(handle)))
                        finished(results[-1])
                    if pending:
                        time.sleep(self.poll_seconds)
            except KeyboardInterrupt:
                for handle in pending:
                    handle.cancel(check=False)
                raise
        return results

    @staticmethod
    def _result(handle: Any, job: Job) -> JobResult:
        """The job's own result, or a failure of the worker itself (a timeout, a node lost) with
        submitit's log of it."""
        try:
            return handle.result()
        except Exception as e:  # noqa: BLE001 - every worker failure is reported, none stops the sweep
            from clavs.errors import short_reason

            return JobResult(job, "failed", None, 0.0, Path(handle.paths.stderr), short_reason(e))
