"""What each method costs per task against ATLAS, measured in one invocation on one machine.

Runs `clavs run` for each method, one after the other, on the embedded default (warm caches: the
runs share CLAVS_HOME, and a first ATLAS run fills them), by default CIL with split 19-2 (3 tasks) and
2 epochs per task, so that the whole comparison takes minutes. ATLAS runs first and again last: the
two figures show how much the machine's speed drifted while the others ran. Prints, per method, the
median over its tasks of the wall time per task (training, model selection, evaluation, end_task;
from profile.json) and of the training time alone, and both as a ratio to ATLAS (the mean of its two
runs). Ratios taken in one invocation are what compare: machines of one kind differ up to 3x.

Usage: python benchmarks/method_cost.py [--methods atlas,l2p,...] [--work DIR] [key=value ...]
(key=value: overrides for every run, e.g. protocol.name=til or train.epochs=8.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# benchmarks/first_run.py: this script's folder is on sys.path when it runs
from first_run import cpu_name

DEFAULT_METHODS = "atlas,finetune,lwf,ewc,si,mas,l2p,ranpac,fecam,dgr,panda"
DEFAULT_OVERRIDES = ["protocol.split=19-2", "train.epochs=2"]


def run_method(method: str, runs: Path, overrides: list[str], env: dict[str, str]) -> tuple[dict, float]:
    """One `clavs run` in a subprocess; its profile.json and the process's wall time."""
    out = runs / method
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "clavs", "run", "--method", method, "--runs-dir", str(out),
                           "--no-progress", *overrides], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"clavs run --method {method} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (profile,) = out.rglob("profile.json")
    return json.loads(profile.read_text()), wall


def per_task(profile: dict, key: str) -> float:
    return statistics.median(t.get(key) or 0.0 for t in profile["tasks"])


def all_tasks(profile: dict, key: str) -> float:
    return sum(t.get(key) or 0.0 for t in profile["tasks"])


def print_table(results: list[tuple[str, dict]]) -> None:
    """Per method: the median task and the sum over tasks (the first task, with most of the clips,
    weighs most there), wall and training time, each against the mean of ATLAS's runs."""
    atlas = [p for m, p in results if m == "atlas"]
    base = {(f, k): statistics.mean(f(p, k) for p in atlas)
            for f in (per_task, all_tasks) for k in ("wall_seconds", "train_seconds")}
    atlas_times = " / ".join(f"{per_task(p, 'wall_seconds'):.1f}" for p in atlas)
    print(f"\nATLAS runs: {atlas_times} s per task (first and last: the machine's drift over the invocation)\n")
    print("| method | wall s, median task | / ATLAS | wall s, all tasks | / ATLAS | training s, all tasks | / ATLAS |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, profile in [r for r in results if r[0] != "atlas"] + [("atlas", atlas[0])]:
        cells = []
        for f, k in ((per_task, "wall_seconds"), (all_tasks, "wall_seconds"), (all_tasks, "train_seconds")):
            value = statistics.mean(f(p, k) for p in atlas) if method == "atlas" else f(profile, k)
            cells += [f"{value:.1f}", f"{value / base[(f, k)]:.2f}"]
        print(f"| {method}{' (mean of its runs)' if method == 'atlas' else ''} | {' | '.join(cells)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("--reprint", action="store_true", help="print the table of the runs already in --work")
    parser.add_argument("overrides", nargs="*", help=f"key=value for every run (default {' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args()
    if args.reprint:
        if args.work is None:
            parser.error("--reprint needs --work DIR")
        found = sorted(args.work.glob("[0-9][0-9]/*/*/*/*/*/profile.json"))  # NN/method/experiment/protocol/method/run
        print_table([(f.parts[-3], json.loads(f.read_text())) for f in found])
        return 0
    methods = [m for m in args.methods.split(",") if m and m != "atlas"]
    overrides = DEFAULT_OVERRIDES + args.overrides
    work = args.work or Path(tempfile.mkdtemp(prefix="clavs-method-cost-"))
    env = dict(os.environ)

    order = ["atlas"] + methods + ["atlas"]
    results: list[tuple[str, dict]] = []
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; runs: {' '.join(overrides)}; work: {work}", flush=True)
    for i, method in enumerate(order):
        profile, wall = run_method(method, work / f"{i:02d}", overrides, env)
        results.append((method, profile))
        print(f"  {method:<9} {per_task(profile, 'wall_seconds'):7.1f} s/task  (process {wall:.0f} s)", flush=True)
    print_table(results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
