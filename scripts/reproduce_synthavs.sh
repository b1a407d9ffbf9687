#!/usr/bin/env bash
# Remake every number of docs/reproducibility.md on the embedded default (SynthAVS default preset,
# tiny pretrained encoders): CIL 11-2 over seeds 0-2 for finetune, lwf, ewc, si, mas, atlas and the
# Table 2 ablations of ATLAS; TIL, DIL and TF-CL for seed 0. The methods run with their defaults,
# which scripts/select_hparams.py chose on validation data.
# 45 runs, two at a time with one thread each; every run's time is in its profile.json (the page
# says what one CIL run took here).
# Usage: scripts/reproduce_synthavs.sh [RUNS_DIR]   (needs `clavs` on PATH, e.g. .venv/bin)
set -euo pipefail
RUNS="${1:-runs-reproduce}"
METHODS="finetune lwf ewc si mas atlas"
jobs=()
for seed in 0 1 2; do
  for method in $METHODS; do
    jobs+=("--seed $seed --method $method")
  done
  jobs+=("--seed $seed --method atlas method.lra=false")
  jobs+=("--seed $seed --method atlas method.pre_conditioning=false")
  jobs+=("--seed $seed --method atlas method.lra=false method.pre_conditioning=false")
done
for protocol in til dil tfcl; do
  for method in $METHODS; do
    jobs+=("--seed 0 --protocol $protocol --method $method")
  done
done
clavs pretrain >/dev/null                      # build the shared caches once before the parallel runs
clavs data synth "${CLAVS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clavs}/data/synthavs-default-seed0" >/dev/null
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c "clavs run --no-progress --runs-dir '$RUNS' experiment=synthavs {} > /dev/null"
clavs table "$RUNS" --metric map
clavs table "$RUNS" --metric maxf
