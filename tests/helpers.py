"""Small builders shared by tests."""

from __future__ import annotations

import torch

from clavs.batch import Batch


def av_batch(frames: torch.Tensor, audio: torch.Tensor, *, frame_ids=None, task_id=None, masks=None,
             mask_valid=None, class_index=None) -> Batch:
    """A Batch from frames [B,T,3,H,W] (float) and audio [B,T,D]; other fields filled plausibly."""
    b = frames.shape[0]
    t = frames.shape[1] if frames.dim() == 5 else 1
    h, w = frames.shape[-2:]
    return Batch(frames=frames, audio=audio,
                 masks=masks if masks is not None else torch.zeros(b, t, 1, h, w),
                 mask_valid=mask_valid if mask_valid is not None else torch.ones(b, t, dtype=torch.bool),
                 class_index=class_index if class_index is not None else torch.full((b,), -1, dtype=torch.long),
                 task_id=task_id if task_id is not None else torch.full((b,), -1, dtype=torch.long),
                 index=torch.arange(b), frame_ids=frame_ids)
