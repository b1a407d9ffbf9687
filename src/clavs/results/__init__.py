"""Run directories: writing them atomically, listing and loading them."""

from clavs.results.store import RunDir, RunInfo, config_hash, list_runs, load_run, run_dir_for

__all__ = ["RunDir", "RunInfo", "config_hash", "list_runs", "load_run", "run_dir_for"]
