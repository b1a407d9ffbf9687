#!/usr/bin/env bash
# Remake every number of docs/reproducibility.md: SynthAVS default preset, tiny pretrained encoders,
# CIL 11-2 over seeds 0-2 (ATLAS, Finetune, the Table 2 ablations), and TIL, DIL, TF-CL for seed 0.
# About 12 minutes on 2 CPU cores (two runs at a time, one thread each).
# Usage: scripts/reproduce_synthavs.sh [RUNS_DIR]   (needs `clavs` on PATH, e.g. .venv/bin)
set -euo pipefail
RUNS="${1:-runs-reproduce}"
jobs=()
for seed in 0 1 2; do
  jobs+=("--seed $seed experiment=table1 --method atlas")
  jobs+=("--seed $seed experiment=table1 --method finetune")
  jobs+=("--seed $seed experiment=ablation-no-lra method.lra=false")
  jobs+=("--seed $seed experiment=ablation-no-preconditioning method.pre_conditioning=false")
  jobs+=("--seed $seed experiment=ablation-neither method.lra=false method.pre_conditioning=false")
done
for protocol in til dil tfcl; do
  for method in atlas finetune; do
    jobs+=("--seed 0 experiment=table1 --protocol $protocol --method $method")
  done
done
clavs pretrain >/dev/null                      # build the shared caches once before the parallel runs
clavs data synth "${CLAVS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clavs}/data/synthavs-default-seed0" >/dev/null
printf '%s\n' "${jobs[@]}" | xargs -P 2 -I{} sh -c "clavs run --no-progress --runs-dir '$RUNS' {} > /dev/null"
clavs table "$RUNS" --metric map
clavs table "$RUNS" --metric maxf
