"""Evaluation of a set of clips: every segmentation metric of the metrics module on the frames that
carry ground truth, plus clip-level class accuracy where the protocol has classes.

Under DDP each process scores its shard of the set (engine/distributed.py); the per-frame states of
the segmentation accumulator and the counts are gathered from every process and merged with each
frame's position in the whole set (clip position * frames per clip + frame), so every process gets
the scores a single process computes on the whole set, bit for bit for equal logits."""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Sequence

import torch

from clavs.batch import Batch, clip_class_logits, labelled_frames
from clavs.metrics import SEGMENTATION_METRICS, SegmentationAccumulator

# gather(local) -> the `local` dict of every process, in rank order (engine/distributed.all_gather_rows).
Gather = Callable[[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]


def frame_positions(batch: Batch, clip_positions: torch.Tensor) -> torch.Tensor:
    """[K] int64 position in the whole evaluated set of each labelled frame `labelled_frames` returns:
    clip position * T + frame, so that sorting them restores the single-process frame order."""
    ids = torch.tensor(batch.decoded_frames, dtype=torch.int64)
    keep = batch.mask_valid[:, batch.decoded_frames].reshape(-1).cpu()
    return (clip_positions[:, None] * batch.num_frames + ids[None, :]).reshape(-1)[keep]


@torch.no_grad()
def evaluate_batches(method: Any, batches: Iterable[Batch], *, has_classes: bool,
                     positions: Sequence[int] | None = None, gather: Gather | None = None) -> dict[str, Any]:
    """Scores x100 of `method.predict` on the labelled frames of every clip, `_frames` (how many) and
    `_frames_by_rank` (how many each process scored).

    positions: each clip's position in the whole set, in the order `batches` yields the clips (None:
    0, 1, 2, ...: the batches are the whole set). gather: given when `batches` is one process's shard;
    the scores are then those of the whole set, on every process."""
    method.model.eval()
    acc = SegmentationAccumulator()
    correct = total = frames_seen = 0
    clip_position = iter(positions) if positions is not None else itertools.count()
    for batch in batches:
        out = method.predict(batch)
        logits, masks = labelled_frames(batch, out)
        clips = torch.tensor([next(clip_position) for _ in range(batch.size)], dtype=torch.int64)
        acc.update(logits[:, 0].float().cpu(), masks[:, 0].cpu(), index=frame_positions(batch, clips))
        frames_seen += logits.shape[0]
        target = batch.class_index
        valid = target >= 0
        if has_classes and out.class_logits is not None and out.class_logits.shape[-1] > 0:
            pred = clip_class_logits(out.class_logits, batch.size).argmax(-1)
            correct += int((pred[valid] == target[valid]).sum())
        if has_classes:
            total += int(valid.sum())
    state = acc.state_dict()
    settings = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}  # format, batch frames, ...
    local = {f"seg.{k}": v for k, v in state.items() if isinstance(v, torch.Tensor)}
    local.setdefault("seg.frame_index", torch.zeros(0, dtype=torch.int64))  # None when nothing was scored here
    local["counts"] = torch.tensor([[frames_seen, correct, total]], dtype=torch.int64)
    states = gather(local) if gather is not None else [local]

    merged = SegmentationAccumulator(acc.official_batch_frames, pooled_aupr=acc.pooled_aupr)
    for part_state in states:
        part = SegmentationAccumulator(acc.official_batch_frames, pooled_aupr=acc.pooled_aupr)
        part.load_state_dict({**settings, **{k[4:]: v for k, v in part_state.items() if k.startswith("seg.")}})
        merged.merge(part)
    frames_by_rank, correct, total = torch.cat([s["counts"] for s in states]).T.tolist()
    frames = sum(frames_by_rank)
    computed = merged.compute() if frames else {}
    scores: dict[str, Any] = {name: float(computed[name]) for name in SEGMENTATION_METRICS if name in computed}
    if has_classes:
        scores["acc"] = 100.0 * sum(correct) / sum(total) if sum(total) else float("nan")
    scores["_frames"] = frames
    scores["_frames_by_rank"] = frames_by_rank
    return scores
