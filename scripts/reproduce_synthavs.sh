#!/usr/bin/env bash
# Remake every number of docs/reproducibility.md on the embedded default (SynthAVS default preset,
# tiny pretrained encoders): the Table 1 grid (every method; CIL 11-2 over seeds 0-2, TIL, DIL and
# TF-CL for seed 0) and the Table 2 grid (ATLAS with LRA and pre-fusion conditioning switched off, CIL
# seeds 0-2 and TF-CL seed 0); src/clavs/configs/experiments/table{1,2}.yaml. The methods run with
# their defaults, which the validation grids chose (scripts/select_hparams.py, i.e.
# `clavs sweep --grid validation --select DIR`).
# Two runs at a time with one thread each; a relaunch runs only what is missing; every run's time is
# in its profile.json and its output in its sweep.log.
# Usage: scripts/reproduce_synthavs.sh [RUNS_DIR]   (needs `clavs` on PATH, e.g. .venv/bin)
set -euo pipefail
RUNS="${1:-runs-reproduce}"
clavs pretrain >/dev/null                      # build the shared caches once before the parallel runs
clavs data synth "${CLAVS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clavs}/data/synthavs-default-seed0" >/dev/null
status=0
clavs sweep --grid table1 --runs-dir "$RUNS" --jobs 2 --no-progress || status=$?
clavs sweep --grid table2 --runs-dir "$RUNS" --jobs 2 --no-progress || status=$?
clavs table "$RUNS" --metric map --format md
clavs table "$RUNS" --metric maxf --format md
exit $status
