#!/usr/bin/env bash
# One clavs run across several nodes of a SLURM cluster: srun starts one process per GPU on every
# node, and Lightning Fabric joins them from SLURM's variables (SLURM_PROCID, SLURM_LOCALID,
# SLURM_NODEID, SLURM_NTASKS; the first host of SLURM_NODELIST is the rendezvous, the port comes from
# the job id). docs/distributed.md explains what is sharded and how to keep a 1-GPU run's numbers.
#
# Usage: sbatch [--nodes N] [--ntasks-per-node G --gpus-per-node G] scripts/slurm_multinode.sh [clavs run arguments]
#   e.g. sbatch --nodes 2 scripts/slurm_multinode.sh --preset paper --data-root /data/avsbench \
#          model.visual_weights=/w/vit_b16.pth model.audio_weights=/w/Cnn14_16k_mAP=0.438.pth train.batch_size=2
# Arguments after the script's name go to `clavs run` after the ones below, so they win (e.g.
# `--accelerator cpu` for a CPU cluster). Needs `clavs` on PATH on every node (or CLAVS=/path/to/clavs).
# The job name must not be `bash` or `interactive`: Fabric then ignores SLURM.
#SBATCH --job-name=clavs-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
: "${SLURM_NNODES:?run this script with sbatch (or inside an allocation: salloc ... bash scripts/slurm_multinode.sh)}"
: "${SLURM_NTASKS_PER_NODE:?give --ntasks-per-node (one process per GPU)}"
CLAVS="${CLAVS:-clavs}"
# Every node must see the same caches (SynthAVS, decoded clips, audio embeddings) and the run
# directory: put CLAVS_HOME and --runs-dir on a shared filesystem. Rank 0 builds the caches first;
# the other processes read them.
export CLAVS_HOME="${CLAVS_HOME:-$HOME/.cache/clavs}"
# One thread per process unless the job says otherwise (the CPU-side work: metrics, data).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}"
# --devices must equal --ntasks-per-node and --num-nodes --nodes: Fabric checks both.
# A job that is requeued or resubmitted continues the same run directory from its last checkpoint.
srun --kill-on-bad-exit=1 "$CLAVS" run --accelerator gpu --devices "$SLURM_NTASKS_PER_NODE" \
  --num-nodes "$SLURM_NNODES" --no-progress "$@"
