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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default {DEFAULT_METHODS})")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temporary folder)")
    parser.add_argument("overrides", nargs="*", help=f"key=value for every run (default {' '.join(DEFAULT_OVERRIDES)})")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m and m != "atlas"]
    overrides = DEFAULT_OVERRIDES + args.overrides
    work = args.work or Path(tempfile.mkdtemp(prefix="clavs-method-cost-"))
    env = dict(os.environ)

    order = ["atlas"] + methods + ["atlas"]
    results: list[tuple[str, dict, float]] = []
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; runs: {' '.join(overrides)}; work: {work}", flush=True)
    for i, method in enumerate(order):
        profile, wall = run_method(method, work / f"{i:02d}", overrides, env)
        results.append((method, profile, wall))
        print(f"  {method:<9} {per_task(profile, 'wall_seconds'):7.1f} s/task  (process {wall:.0f} s)", flush=True)

    atlas = [p for m, p, _ in results if m == "atlas"]
    base_wall = statistics.mean(per_task(p, "wall_seconds") for p in atlas)
    base_train = statistics.mean(per_task(p, "train_seconds") for p in atlas)
    print(f"\nATLAS first / last: {per_task(atlas[0], 'wall_seconds'):.1f} / {per_task(atlas[1], 'wall_seconds'):.1f} "
          f"s per task (the machine's drift over the invocation)\n")
    print("| method | wall s / task | wall / ATLAS | training s / task | training / ATLAS |")
    print("|---|---:|---:|---:|---:|")
    for method, profile, _ in results[1:-1]:
        wall, train = per_task(profile, "wall_seconds"), per_task(profile, "train_seconds")
        print(f"| {method} | {wall:.1f} | {wall / base_wall:.2f} | {train:.1f} | {train / base_train:.2f} |")
    print(f"| atlas (mean of 2) | {base_wall:.1f} | 1.00 | {base_train:.1f} | 1.00 |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
