"""Multi-process runs: how clips are dealt out (against torch's DataLoader as the single-process
oracle), sharded evaluation merged bit for bit (against segmentation_scores on the whole set), and
real 2-process DDP over gloo against 1 process (tests/ddp_worker.py; the full `clavs run` comparison
is marked slow)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from helpers import av_batch
from torch.utils.data import DataLoader

from clavs.batch import Batch, ModelOutput, labelled_frames
from clavs.engine.clips import embedding_numerics
from clavs.engine.distributed import epoch_order, fresh_clips_in_step, shard_positions, training_share
from clavs.engine.evaluate import evaluate_batches
from clavs.engine.runner import devices_per_node
from clavs.methods.context import MethodContext, TaskData
from clavs.metrics import segmentation_scores
from clavs.utils.kernels import kernel_tag

TESTS = Path(__file__).parent


# --- how clips are dealt out ----------------------------------------------------------------------
@pytest.mark.parametrize("n,seed", [(1, 0), (7, 3), (22, 91)])
def test_epoch_order_is_what_a_shuffling_dataloader_draws(n, seed):
    """Single-process runs keep the order they had with DataLoader(shuffle=True, generator=seed)."""
    loader = DataLoader(list(range(n)), batch_size=n, shuffle=True, generator=torch.Generator().manual_seed(seed))
    assert epoch_order(n, seed) == next(iter(loader)).tolist()


@pytest.mark.parametrize("n,world,batch", [(12, 2, 4), (24, 3, 2), (22, 2, 4)])
def test_processes_steps_together_are_the_single_process_batches(n, world, batch):
    """Step k of W processes with batch B covers exactly batch k of one process with batch B*W."""
    seed = 17
    single = [b.tolist() for b in DataLoader(list(range(n)), batch_size=batch * world, shuffle=True,
                                             generator=torch.Generator().manual_seed(seed))]
    shares = [training_share(n, seed, r, world) for r in range(world)]
    steps = [[s[k: k + batch] for s in shares] for k in range(0, len(shares[0]), batch)]
    assert len(steps) == len(single)
    for k, (parts, whole) in enumerate(zip(steps, single)):
        assert sorted(i for p in parts for i in p) == sorted(whole)
        assert len({len(p) for p in parts}) == 1  # equal shares: DDP's gradient mean is the batch mean
        assert fresh_clips_in_step(k, batch, world, n) == len(whole)


def test_uneven_training_set_is_padded_like_distributed_sampler():
    n, world, seed = 13, 3, 4
    shares = [training_share(n, seed, r, world) for r in range(world)]
    assert {len(s) for s in shares} == {5}  # ceil(13 / 3)
    order = epoch_order(n, seed)
    dealt = [shares[p % world][p // world] for p in range(15)]
    assert dealt == order + order[:2]  # padded with the order's first clips
    assert sum(fresh_clips_in_step(k, 2, world, n) for k in range(3)) == n  # padding is not counted as seen


@pytest.mark.parametrize("n,world,block", [(17, 2, 4), (5, 3, 4), (9, 4, 1), (0, 2, 3)])
def test_evaluation_shards_are_whole_batches_dealt_round_robin(n, world, block):
    parts = [shard_positions(n, r, world, block) for r in range(world)]
    assert sorted(p for part in parts for p in part) == list(range(n))  # disjoint, together all, no padding
    for r, part in enumerate(parts):
        assert all((p // block) % world == r for p in part)


# --- sharded evaluation, merged -------------------------------------------------------------------
class _PixelMethod:
    """predict: logits that depend on each clip alone (a fixed function of its pixels and audio),
    class logits from its audio; records the clips it scored."""

    def __init__(self):
        self.model = torch.nn.Identity()
        self.scored: list[int] = []

    def predict(self, batch: Batch) -> ModelOutput:
        self.scored += batch.index.tolist()
        ids = batch.decoded_frames
        frames = batch.frames[:, ids]
        logits = (frames.mean(2, keepdim=True) - 0.5) * 9 + batch.audio[:, ids, :1, None, None]
        return ModelOutput(mask_logits=logits.flatten(0, 1), class_logits=batch.audio[:, ids, :3].flatten(0, 1))


def _clips(n: int = 11, frames: int = 3, size: int = 12) -> list[Batch]:
    """n one-clip batches: random frames and masks, one clip without foreground, some clips that
    label only their last frame, labels 0..2 (one unknown)."""
    g = torch.Generator().manual_seed(3)
    out = []
    for i in range(n):
        masks = (torch.rand(1, frames, 1, size, size, generator=g) > 0.6).float() * (i != 4)
        valid = torch.ones(1, frames, dtype=torch.bool)
        if i % 3 == 1:
            valid[0, :-1] = False
        b = av_batch(torch.rand(1, frames, 3, size, size, generator=g), torch.randn(1, frames, 4, generator=g),
                     masks=masks, mask_valid=valid, class_index=torch.tensor([i % 3 if i != 7 else -1]))
        b.index = torch.tensor([i])
        out.append(b)
    return out


def _batches(clips: list[Batch], positions: list[int], size: int) -> list[Batch]:
    picked = [clips[p] for p in positions]
    return [Batch.cat(picked[i: i + size]) for i in range(0, len(picked), size)]


def test_shards_merged_score_like_one_process_on_the_whole_set():
    """Three 'processes' score their shards; merging their states (the gather) gives the single-
    process scores exactly, equal to segmentation_scores on all labelled frames in set order."""
    clips, world, block = _clips(), 3, 2
    whole_method = _PixelMethod()
    whole = evaluate_batches(whole_method, _batches(clips, list(range(len(clips))), 4), has_classes=True)

    locals_: dict[int, dict] = {}
    results, methods = [], []
    for rank in reversed(range(world)):  # the last rank's state is captured first, then rank 0 merges all
        positions = shard_positions(len(clips), rank, world, block)
        method = _PixelMethod()
        methods.append(method)

        def gather(local, rank=rank):
            locals_[rank] = local
            return [locals_[r] for r in range(world)] if rank == 0 else [local]
        results.append(evaluate_batches(method, _batches(clips, positions, block), has_classes=True,
                                        positions=positions, gather=gather))
    merged = results[-1]
    assert merged["_frames_by_rank"] == [sum(int(clips[p].mask_valid.sum()) for p in
                                             shard_positions(len(clips), r, world, block)) for r in range(world)]
    del merged["_frames_by_rank"], whole["_frames_by_rank"]
    assert merged == whole  # bit for bit
    assert sorted(i for m in methods for i in m.scored) == list(range(len(clips)))

    # Independent oracle: the metric functions on every labelled frame, in set order.
    outs = [labelled_frames(c, _PixelMethod().predict(c)) for c in clips]
    oracle = segmentation_scores(torch.cat([o[0] for o in outs])[:, 0], torch.cat([o[1] for o in outs])[:, 0])
    assert all(merged[k] == pytest.approx(oracle[k], abs=1e-9) or (math.isnan(merged[k]) and math.isnan(oracle[k]))
               for k in ("map", "maxf", "miou", "aupr", "dice", "f1", "maxf_official"))
    labelled = [c for c in clips if int(c.class_index) >= 0]
    correct = sum(int(c.audio[0, :, :3].mean(0).argmax() == c.class_index) for c in labelled)
    assert merged["acc"] == 100.0 * correct / len(labelled)
    assert merged["_frames"] == sum(int(c.mask_valid.sum()) for c in clips)


def test_a_process_without_clips_still_merges():
    clips = _clips(3)
    parts = {}

    def gather_1(local):
        parts[1] = local
        return [local]
    empty = evaluate_batches(_PixelMethod(), [], has_classes=True, positions=[], gather=gather_1)
    assert empty["_frames"] == 0 and "map" not in empty and math.isnan(empty["acc"])
    got = evaluate_batches(_PixelMethod(), _batches(clips, [0, 1, 2], 4), has_classes=True, positions=[0, 1, 2],
                           gather=lambda local: [local, parts[1]])
    alone = evaluate_batches(_PixelMethod(), _batches(clips, [0, 1, 2], 4), has_classes=True)
    assert got["_frames_by_rank"] == [alone["_frames"], 0]
    assert {k: v for k, v in got.items() if k != "_frames_by_rank"} == \
        {k: v for k, v in alone.items() if k != "_frames_by_rank"}


# --- what methods get -----------------------------------------------------------------------------
def _ctx(world: int) -> MethodContext:
    return MethodContext(fabric=types.SimpleNamespace(world_size=world, device=torch.device("cpu")), config={})


def test_ctx_shard_splits_only_the_engines_data():
    data = TaskData(lambda share: ["mine"] if share else ["mine", "theirs"])
    assert list(data) == ["mine", "theirs"]
    assert _ctx(1).shard(data) is data  # one process: everything
    assert list(_ctx(2).shard(data)) == ["mine"]
    with pytest.raises(TypeError, match="TaskData.*counting clips twice"):
        _ctx(2).shard([1, 2, 3])


def test_devices_per_node_and_embedding_numerics():
    assert devices_per_node({"devices": "0,1", "accelerator": "gpu"}) == 2
    assert devices_per_node({"devices": 3, "accelerator": "cpu"}) == 3
    assert devices_per_node({"devices": "auto", "accelerator": "cpu"}) == 1
    # CPU embeddings keep the cache key they always had; another device gets its own.
    assert embedding_numerics(torch.device("cpu")) == kernel_tag()
    assert embedding_numerics(torch.device("meta")) == "meta:"


# --- real processes -------------------------------------------------------------------------------
def _worker(devices: int, out: Path) -> list[dict]:
    out.mkdir()
    if devices == 1:  # in this process (one interpreter start less), with the workers' one thread
        import ddp_worker

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            ddp_worker.main(1, out)
        finally:
            torch.set_num_threads(threads)
        return [torch.load(out / "rank0.pt", weights_only=True)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(TESTS / "ddp_worker.py"), str(devices), str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(devices)]


def test_two_gloo_processes_score_like_one(tmp_path):
    """Trainer.score with 2 DDP processes: each scores its own clips (whole evaluation batches,
    checked), every process gets the 1-process scores bit for bit; one training epoch is dealt out
    as a 1-process epoch of twice the batch; stream windows are united; EWC's Fisher over the shards,
    all-reduced, equals the 1-process Fisher to float rounding (measured: relative 1e-6 or better)."""
    from ddp_worker import CONFIG, SETS

    (one,) = _worker(1, tmp_path / "one")
    two = _worker(2, tmp_path / "two")
    block = CONFIG["train"]["eval_batch_size"]
    for name, clips in SETS.items():
        want = dict(one["scores"][name])
        assert want.pop("_frames_by_rank") == [want["_frames"]]
        seen = [set(p["predicted"][list(SETS).index(name)]) for p in two]
        assert seen[0].isdisjoint(seen[1]) and sorted(seen[0] | seen[1]) == sorted(clips)
        for rank, part in enumerate(two):
            assert seen[rank] == {clips[p] for p in shard_positions(len(clips), rank, 2, block)}
            got = dict(part["scores"][name])
            by_rank = got.pop("_frames_by_rank")
            assert sum(by_rank) == want["_frames"] and got == want  # bit for bit, on both processes
        assert (by_rank[1] == 0) == (name == "few")  # 3 clips are one batch: the second process has none

    batch = CONFIG["train"]["batch_size"]
    single = [i for step in one["epoch"] for i in step]
    single += single[: len(single) % 2]  # padded to a multiple of 2 with the epoch's first clip
    assert len(two[0]["epoch"]) == len(two[1]["epoch"]) == math.ceil(len(single) / (2 * batch))
    for k, (a, b) in enumerate(zip(two[0]["epoch"], two[1]["epoch"])):
        assert sorted(a + b) == sorted(single[2 * batch * k: 2 * batch * (k + 1)])
    assert two[0]["window"] == two[1]["window"] == [0, 1, 3, 10, 11]
    assert one["window"] == [0, 10, 3]
    for name, f in one["fisher"].items():
        assert torch.equal(two[0]["fisher"][name], two[1]["fisher"][name])
        torch.testing.assert_close(two[0]["fisher"][name], f, rtol=1e-5, atol=1e-5 * float(f.abs().max()) + 1e-12)


# --- the whole run ---------------------------------------------------------------------------------
RUN = ["--preset", "smoke", "--no-progress", "model.visual_weights=none", "model.audio_weights=none",
       "protocol.split=11-6", "train.eval_batch_size=4"]
# Measured on SynthAVS smoke (x100 scale): the initial row b is bit-identical; after training the
# largest difference was 2.4e-5 (ATLAS) and 6.6e-4 (EWC: Fisher sums added in another order).
TRAINED_TOLERANCE = 5e-3


def _run(tmp_path: Path, name: str, *args: str) -> dict:
    runs = tmp_path / name
    proc = subprocess.run([sys.executable, "-m", "clavs", "run", *RUN, "--runs-dir", str(runs), *args],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = [p.parent for p in runs.rglob("config.yaml")]
    assert len(dirs) == 1, dirs  # one run directory, written by rank 0 only
    assert proc.stdout.count("run directory:") == 1
    return {f: json.loads((dirs[0] / f).read_text()) for f in ("matrices.json", "profile.json", "scenario.json")}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["atlas", "ewc"])
def test_two_process_run_gives_the_one_process_matrices(clavs_home, tmp_path, method):
    """`clavs run --devices 2 train.batch_size=4` against 1 process with batch 8 (the same global
    batch): the same matrices within TRAINED_TOLERANCE, b bit for bit, each process scoring about
    half of the test clips (whole evaluation batches)."""
    one = _run(tmp_path, "one", "--method", method)
    two = _run(tmp_path, "two", "--method", method, "--devices", "2", "train.batch_size=4")
    for name, m in one["matrices.json"]["metrics"].items():
        other = two["matrices.json"]["metrics"][name]
        assert other["b"] == m["b"], name
        for row_a, row_b in zip(m["R"], other["R"]):
            for a, b in zip(row_a, row_b):
                assert (a is None and b is None) or abs(a - b) <= TRAINED_TOLERANCE, (name, a, b)
    prof = two["profile.json"]
    assert prof["processes"]["world_size"] == 2 and one["profile.json"]["processes"]["world_size"] == 1
    frames_per_clip, block = 5, 4
    tests = [len(task["test"]) for task in two["scenario.json"]["tasks"]]
    for t, (task_a, task_b) in enumerate(zip(one["profile.json"]["tasks"], prof["tasks"])):
        # After task t the test sets of tasks 0..t+1 are scored, each dealt out in blocks of 4 clips.
        share = [sum(frames_per_clip * len(shard_positions(n, r, 2, block)) for n in tests[: t + 2]) for r in (0, 1)]
        assert task_b["eval_frames_by_rank"] == share and min(share) > 0
        assert sum(share) == task_b["eval_frames"] == task_a["eval_frames"]
        assert task_b["train_frames"] == task_a["train_frames"] == sum(task_b["train_frames_by_rank"])
        assert task_b["train_frames_by_rank"][0] == task_b["train_frames_by_rank"][1]


FAKE_SRUN = """#!/usr/bin/env bash
# srun inside a one-node allocation: SLURM_NTASKS_PER_NODE copies of the command, with the variables
# srun gives each task.
while [[ $1 == -* ]]; do shift; done
n=$SLURM_NTASKS_PER_NODE
pids=()
for ((r = 0; r < n; r++)); do
  SLURM_NTASKS=$n SLURM_PROCID=$r SLURM_LOCALID=$r SLURM_NODEID=0 SLURM_NODELIST=localhost "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
"""


@pytest.mark.slow
def test_slurm_script_under_a_simulated_srun(clavs_home, tmp_path):
    """scripts/slurm_multinode.sh as sbatch would run it on one node with 2 tasks: Fabric takes the
    ranks from SLURM's variables (it starts no process of its own), one run directory, printed once."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN)
    (bin_dir / "clavs").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m clavs "$@"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": "1", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_JOB_ID": str(4000 + os.getpid() % 5000), "SLURM_JOB_NAME": "clavs-test", "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    proc = subprocess.run(["bash", str(TESTS.parent / "scripts" / "slurm_multinode.sh"), *RUN, "--accelerator", "cpu",
                           "--runs-dir", str(runs)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1
    (run,) = [p.parent for p in runs.rglob("DONE")]
    profile = json.loads((run / "profile.json").read_text())
    assert profile["processes"] == {"world_size": 2, "num_nodes": 1, "devices_per_node": 2, "device": "cpu",
                                    "precision": "32-true"}
    assert "Initializing distributed: GLOBAL_RANK: 1" in proc.stderr + proc.stdout
