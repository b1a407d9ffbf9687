#!/usr/bin/env python
"""Choose every method's hyperparameters on validation data: run a grid (seed 0, CIL 11-2, the
embedded default) and pick, per method, the grid point with the best validation AA (mAP) — the mean
of the last row of matrices_val.json. Test numbers are never read.

    python scripts/select_hparams.py [RUNS_DIR] [--jobs 2] [--methods atlas,ewc]

Runs already DONE are skipped, so a relaunch only runs what is missing. Prints one table per method
(validation AA and Forgetting of every grid point) and the winners as `method.key=value` overrides.
The grids are the GRIDS dict below; docs/reproducibility.md records the winners.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# ATLAS: LRA's strength in the paper's form, then our two extensions (each, and both) at the middle strength;
# the CL baselines: the original default and a stronger setting (x10; x100 for EWC, whose Fisher is
# small on these networks). Small grids because every point is a full run (a few minutes on 2 cores).
GRIDS: dict[str, list[dict]] = {
    "atlas": [{"lra_lambda": lam, "anchor_fusion": False, "decoder_base_after_first": False} for lam in (5.0, 20.0, 80.0)]
    + [{"lra_lambda": 20.0, "anchor_fusion": af, "decoder_base_after_first": db}
       for af, db in ((True, False), (False, True), (True, True))],
    "ewc": [{"ewc_lambda": v} for v in (100.0, 10000.0)],
    "si": [{"si_c": v} for v in (0.5, 5.0)],
    "mas": [{"mas_lambda": v} for v in (1.0, 10.0)],
    "lwf": [{"alpha": v} for v in (1.0, 3.0)],
}
# The same experiment as scripts/reproduce_synthavs.sh: the winner's seed-0 run is that script's run.
EXPERIMENT = "synthavs"


def _value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def grid_points(method: str) -> list[dict]:
    return GRIDS[method]


def command(clavs: str, runs: Path, method: str, point: dict, extra: list[str]) -> list[str]:
    return [clavs, "run", "--no-progress", "--runs-dir", str(runs), "--method", method, "--seed", "0",
            f"experiment={EXPERIMENT}", "train.val_matrix=full",  # every validation row: the report shows Forgetting
            *[f"method.{k}={_value(v)}" for k, v in point.items()], *extra]


def validation_aa(runs: Path, method: str, point: dict) -> tuple[float, float] | None:
    """(AA, Forgetting) of mAP on the validation clips of the finished run of this grid point."""
    import dataclasses

    import yaml

    from clavs.methods import get_method_class

    # The whole method section must be the method's defaults with this point's values: a run that
    # shares the point's values but switches something else off (an ablation) is another point.
    wanted = {**dataclasses.asdict(get_method_class(method).Hparams()), **point}
    for cfg in runs.glob(f"*/cil/{method}/seed0-*/config.yaml"):
        c = yaml.safe_load(cfg.read_text())
        section = {k: v for k, v in c["method"].items() if k != "name"}
        if section == wanted and (cfg.parent / "DONE").exists():
            s = json.loads((cfg.parent / "summary_val.json").read_text())["map"]
            return s["aa"], math.nan if s.get("forgetting") is None else s["forgetting"]
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir", nargs="?", default="runs-select")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    ap.add_argument("--methods", default=",".join(GRIDS))
    ap.add_argument("--report-only", action="store_true", help="run nothing; print what the finished runs say")
    ap.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a preset's)")
    args = ap.parse_args(argv)
    runs = Path(args.runs_dir)
    clavs = shutil.which("clavs") or str(Path(sys.executable).with_name("clavs"))
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in GRIDS]
    if unknown or args.jobs < 1:
        ap.error(f"unknown method(s) {unknown}; grids exist for {', '.join(GRIDS)}" if unknown else "--jobs must be >= 1")
    todo = [] if args.report_only else [(m, p) for m in methods for p in grid_points(m) if validation_aa(runs, m, p) is None]
    print(f"{len(todo)} grid runs to do ({sum(len(grid_points(m)) for m in methods)} in all)", flush=True)

    def launch(job):
        m, p = job
        done = subprocess.run(command(clavs, runs, m, p, args.extra), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = "ok" if done.returncode == 0 else f"FAILED ({done.returncode}): {done.stderr.strip()[-300:]}"
        print(f"{m} {p}: {status}", flush=True)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(launch, todo))
    winners = {}
    for m in methods:
        print(f"\n{m}: validation mAP (CIL 11-2, seed 0)")
        best = None
        for p in grid_points(m):
            res = validation_aa(runs, m, p)
            shown = "missing" if res is None else f"AA {res[0]:6.2f}  Forgetting {res[1]:6.2f}"
            print(f"  {' '.join(f'{k}={_value(v)}' for k, v in p.items()):60s} {shown}")
            if res is not None and not math.isnan(res[0]) and (best is None or res[0] > best[1]):
                best = (p, res[0])
        if best:
            winners[m] = best[0]
            print(f"  -> best: {' '.join(f'method.{k}={_value(v)}' for k, v in best[0].items())} (validation AA {best[1]:.2f})")
    print("\nwinners:", json.dumps(winners))
    return 0


if __name__ == "__main__":
    sys.exit(main())
