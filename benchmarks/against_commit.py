"""Is this checkout's `clavs run` faster or slower than an earlier commit's, and are its numbers the same?

Both runs start together (one process each, on the same caches, so that they see the same load; a
ratio taken in one invocation is what compares: machines of one kind differ up to 3x). The earlier
commit runs from a `git worktree` of this repository in a temporary folder, with
PYTHONPATH=<worktree>/src and this environment's Python. Prints each wall time, the ratio, the
phases of each run's profile.json that both record, and whether the test accuracy matrices
(matrices.json) are identical.

Warm caches are the fair comparison: `--warm-up` first runs each side alone with train.epochs=1
(which fills every cache it reads: SynthAVS, weights, decoded clips, audio embeddings), then the
timed runs start. `--home DIR` gives both sides that cache folder (CLAVS_HOME), e.g. a copy, so
that a version whose cache format differs does not rebuild a cache other processes are reading.

Usage: python benchmarks/against_commit.py COMMIT [--work DIR] [--home DIR] [--warm-up] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def start(src: Path, runs: Path, overrides: list[str], log: Path, home: str | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(src), **({"CLAVS_HOME": home} if home else {}))
    cmd = [sys.executable, "-c", "import sys; from clavs.cli import main; sys.exit(main())",
           "run", "--no-progress", "--runs-dir", str(runs), *overrides]
    return subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def one_run(runs: Path) -> Path:
    found = [p.parent for p in runs.rglob("DONE")]
    if len(found) != 1:
        sys.exit(f"expected one finished run under {runs}, found {len(found)}")
    return found[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commit", help="the earlier commit (e.g. 21c0798)")
    ap.add_argument("--work", help="folder for the worktree, runs and logs (default: temporary, removed after)")
    ap.add_argument("--home", help="CLAVS_HOME for both sides (default: the environment's)")
    ap.add_argument("--warm-up", action="store_true", help="fill each side's caches first (one 1-epoch run each, alone)")
    ap.add_argument("overrides", nargs="*", help="key=value for both runs")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="clavs-against-"))
    tree = work / "tree"
    try:
        if not tree.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.commit],
                           check=True, stdout=subprocess.DEVNULL)
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        sides = {"before": (tree / "src", work / "runs-before"), "after": (REPO / "src", work / "runs-after")}
        if args.warm_up:
            for name, (src, runs) in sides.items():
                p = start(src, work / f"warm-{name}", [*args.overrides, "train.epochs=1"], work / f"warm-{name}.log", args.home)
                if p.wait() != 0:
                    sys.exit(f"the {name} warm-up failed ({p.returncode}); see {work / f'warm-{name}.log'}")
        for _, runs in sides.values():
            shutil.rmtree(runs, ignore_errors=True)
        t0 = time.perf_counter()
        procs = {name: start(src, runs, args.overrides, work / f"{name}.log", args.home)
                 for name, (src, runs) in sides.items()}
        walls = {}
        while len(walls) < len(procs):
            for name, p in procs.items():
                if name not in walls and p.poll() is not None:
                    walls[name] = time.perf_counter() - t0
                    if p.returncode != 0:
                        sys.exit(f"the {name} run failed ({p.returncode}); see {work / f'{name}.log'}")
            time.sleep(0.5)
        runs = {name: one_run(r) for name, (_, r) in sides.items()}
        print(f"before = {args.commit}, after = {head}{' (with uncommitted changes)' if _dirty() else ''}")
        for name in sides:
            print(f"{name:6s}: {walls[name]:7.1f} s  ({runs[name]})")
        print(f"after / before: {walls['after'] / walls['before']:.3f}")
        profiles = {n: json.loads((r / "profile.json").read_text()) for n, r in runs.items()}
        keys = sorted(set.intersection(*({k for t in p["tasks"] for k, v in t.items() if k.endswith("_seconds")}
                                         for p in profiles.values())))
        for key in keys:
            a, b = (sum(t.get(key) or 0.0 for t in profiles[n]["tasks"]) for n in ("before", "after"))
            print(f"  {key:22s} before {a:7.1f} s   after {b:7.1f} s")
        same = (runs["before"] / "matrices.json").read_bytes() == (runs["after"] / "matrices.json").read_bytes()
        print(f"test matrices (matrices.json) identical: {same}")
    finally:
        if not args.work:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _dirty() -> bool:
    return bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    sys.exit(main())
