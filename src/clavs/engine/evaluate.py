"""Evaluation of a set of clips: every segmentation metric of the metrics module on the frames that
carry ground truth, plus clip-level class accuracy where the protocol has classes."""

from __future__ import annotations

from typing import Any, Iterable

import torch

from clavs.batch import Batch, clip_class_logits, labelled_frames
from clavs.metrics import SEGMENTATION_METRICS, SegmentationAccumulator


@torch.no_grad()
def evaluate_batches(method: Any, batches: Iterable[Batch], *, has_classes: bool) -> dict[str, float]:
    """Scores x100 of `method.predict` on the labelled frames of every clip (and `_frames`: how many)."""
    method.model.eval()
    acc = SegmentationAccumulator()
    correct = total = 0
    frames_seen = 0
    for batch in batches:
        out = method.predict(batch)
        logits, masks = labelled_frames(batch, out)
        acc.update(logits[:, 0].float().cpu(), masks[:, 0].cpu())
        frames_seen += logits.shape[0]
        target = batch.class_index
        valid = target >= 0
        if has_classes and out.class_logits is not None and out.class_logits.shape[-1] > 0:
            pred = clip_class_logits(out.class_logits, batch.size).argmax(-1)
            correct += int((pred[valid] == target[valid]).sum())
        if has_classes:
            total += int(valid.sum())
    computed = acc.compute() if frames_seen else {}
    scores = {name: float(computed[name]) for name in SEGMENTATION_METRICS if name in computed}
    if has_classes:
        scores["acc"] = 100.0 * correct / total if total else float("nan")
    scores["_frames"] = frames_seen
    return scores
