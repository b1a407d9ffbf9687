#!/usr/bin/env python
"""Choose every method's hyperparameters on validation data: run the validation grids (seed 0,
CIL 11-2, the embedded default) and pick, per method, the grid point with the best validation AA
(mAP). Test numbers are never read.

    python scripts/select_hparams.py [RUNS_DIR] [--jobs 2] [--methods atlas,ewc] [--report-only] [key=value ...]

The same as `clavs sweep --grid validation --runs-dir RUNS_DIR --jobs 2 --select RUNS_DIR/selected`
(the grids are in src/clavs/configs/experiments/validation.yaml; relaunching runs only what is
missing); --report-only is `clavs select RUNS_DIR --grid validation`. The chosen method sections are
written to RUNS_DIR/selected/<method>.cil.yaml (for `clavs run --config` or `clavs sweep --selected`).
"""

from __future__ import annotations

import argparse
import sys

from clavs.cli import main as clavs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs_dir", nargs="?", default="runs-select")
    ap.add_argument("--jobs", type=int, default=2, help="runs at once (each uses one thread)")
    ap.add_argument("--methods", default=None, help="comma-separated (default: every method of the grid)")
    ap.add_argument("--report-only", action="store_true", help="run nothing; rank what the finished runs say")
    ap.add_argument("extra", nargs="*", help="key=value overrides for every run (e.g. a preset's)")
    args = ap.parse_args(argv)
    spec = ["--grid", "validation", *(["--methods", args.methods] if args.methods else []), *args.extra]
    out = f"{args.runs_dir}/selected"
    if args.report_only:
        return clavs(["select", args.runs_dir, *spec, "--out", out])
    return clavs(["sweep", *spec, "--runs-dir", args.runs_dir, "--jobs", str(args.jobs), "--select", out])


if __name__ == "__main__":
    sys.exit(main())
