"""Evaluation of one task's test (or validation) clips: every metric of the metrics module, plus
clip-level class accuracy where the protocol has classes."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from clavs.engine.clips import prepare_batch
from clavs.methods.base import clip_class_logits, labelled_frames
from clavs.metrics import SegmentationAccumulator


# The scores that fill accuracy matrices (the accumulator also returns counts and the best threshold).
SEGMENTATION_METRICS = ("map", "maxf", "maxf_official", "miou", "aupr", "dice", "f1")


@torch.no_grad()
def evaluate_loader(method: Any, loader: DataLoader, *, task_id: int | None, has_classes: bool,
                    fabric: Any = None) -> dict[str, float]:
    """Scores x100 of `method.predict` on the valid frames of every clip the loader yields."""
    method.model.eval()
    acc = SegmentationAccumulator()
    correct = total = 0
    frames_seen = 0
    for batch in loader:
        if fabric is not None:
            batch = fabric.to_device(batch)
        batch = prepare_batch(batch)
        out = method.predict(batch, task_id=task_id)
        logits, masks = labelled_frames(batch, out)
        acc.update(logits[:, 0].float().cpu(), masks[:, 0].cpu())
        frames_seen += logits.shape[0]
        cl = out.get("class_logits")
        if has_classes and cl is not None and cl.shape[-1] > 0:
            pred = clip_class_logits(cl, batch["class_index"].shape[0]).argmax(-1)
            target = batch["class_index"]
            valid = target >= 0
            correct += int((pred[valid] == target[valid]).sum())
            total += int(valid.sum())
        elif has_classes:
            total += int((batch["class_index"] >= 0).sum())
    computed = acc.compute() if frames_seen else {}
    scores = {name: float(computed[name]) for name in SEGMENTATION_METRICS if name in computed}
    if has_classes:
        scores["acc"] = 100.0 * correct / total if total else float("nan")
    scores["_frames"] = frames_seen
    return scores
