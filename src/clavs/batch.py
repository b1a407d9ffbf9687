"""The two types every part of clavs passes around: a `Batch` of clips and a network's `ModelOutput`.

This module is the lowest layer: the engine, the methods and the networks all import it, and it
imports nothing of theirs. A `Batch` is always a valid model input: which frames carry ground truth
is a field (`mask_valid`), and which frames a network should decode is another (`frame_ids`), never a
reshaping of the tensors, so a second forward (a frozen teacher's) on the same batch works as the first.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Batch", "ModelOutput", "labelled_frames", "clip_class_logits"]


@dataclass
class Batch:
    """B clips of T frames.

    frames      [B,T,3,H,W] float in [0, 1] (uint8 before `prepared()`); the encoder normalises.
    audio       [B,T,D] the frozen audio encoder's embedding of every frame-second.
    masks       [B,T,1,H,W] float {0, 1} (uint8 before `prepared()`).
    mask_valid  [B,T] bool: the frames that carry ground truth (S4 train: frame 1 only).
    class_index [B] long: model class index of the clip's category, -1 when unknown (MS3) or hidden.
    task_id     [B] long: the task the clip belongs to where the protocol reveals it, else -1.
    index       [B] long: the clip's position in its split (stable across epochs).
    frame_ids   the frame positions a network needs to decode (None = all): set by the engine when
                only those carry labels; outputs then cover B * len(frame_ids) frames.
    extra       method-specific per-clip tensors (e.g. a sample's origin), concatenated with the batch.
    """

    frames: torch.Tensor
    audio: torch.Tensor
    masks: torch.Tensor
    mask_valid: torch.Tensor
    class_index: torch.Tensor
    task_id: torch.Tensor
    index: torch.Tensor
    frame_ids: list[int] | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    _PER_CLIP = ("frames", "audio", "masks", "mask_valid", "class_index", "task_id", "index")

    @property
    def size(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[1])

    @property
    def decoded_frames(self) -> list[int]:
        """The frame positions a forward decodes, in order."""
        return list(range(self.num_frames)) if self.frame_ids is None else list(self.frame_ids)

    def prepared(self) -> "Batch":
        """uint8 frames and masks -> float (frames in [0, 1]); a no-op on float tensors."""
        frames = self.frames.float().div_(255) if self.frames.dtype == torch.uint8 else self.frames
        masks = self.masks.float() if self.masks.dtype != torch.float32 else self.masks
        return dataclasses.replace(self, frames=frames, masks=masks, mask_valid=self.mask_valid.bool())

    def to(self, device: torch.device | str) -> "Batch":
        moved = {k: getattr(self, k).to(device) for k in self._PER_CLIP}
        return dataclasses.replace(self, **moved, extra={k: v.to(device) for k, v in self.extra.items()})

    def select(self, rows: torch.Tensor | list[int]) -> "Batch":
        """The clips at `rows` (a bool mask or positions)."""
        picked = {k: getattr(self, k)[rows] for k in self._PER_CLIP}
        return dataclasses.replace(self, **picked, extra={k: v[rows] for k, v in self.extra.items()})

    def with_frame_ids(self, frame_ids: list[int] | None) -> "Batch":
        return dataclasses.replace(self, frame_ids=None if frame_ids is None else list(frame_ids))

    @staticmethod
    def cat(batches: list["Batch"]) -> "Batch":
        """Clips of several batches in one (the batches must decode the same frames)."""
        if len({tuple(b.decoded_frames) for b in batches}) != 1:
            raise ValueError("Batch.cat: batches decode different frames (frame_ids differ)")
        keys = set(batches[0].extra)
        if any(set(b.extra) != keys for b in batches):
            raise ValueError("Batch.cat: batches carry different `extra` fields")
        joined = {k: torch.cat([getattr(b, k) for b in batches]) for k in Batch._PER_CLIP}
        return Batch(**joined, frame_ids=batches[0].frame_ids,
                     extra={k: torch.cat([b.extra[k] for b in batches]) for k in keys})

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> "Batch":
        """DataLoader collate_fn for items with the per-clip keys (see engine/clips.py)."""
        return Batch(**{k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in Batch._PER_CLIP})


@dataclass
class ModelOutput:
    """What a network returns for a Batch.

    mask_logits  [B*t,1,H,W] at input resolution, for the t = len(frame_ids) decoded frames of each clip
                 (clip-major: clip 0's frames, then clip 1's, ...).
    class_logits [B*t,C] over the classes seen so far, or None (no class head / no classes yet).
    features     named intermediate tensors methods may read (e.g. `pooled` [B*t,d], `visual_tokens`).
    frame_ids    the frame positions decoded (copied from the batch).
    """

    mask_logits: torch.Tensor
    class_logits: torch.Tensor | None = None
    features: dict[str, Any] = field(default_factory=dict)
    frame_ids: list[int] | None = None


def labelled_frames(batch: Batch, out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask logits and ground-truth masks [K,1,H,W] of the K decoded frames that carry ground truth."""
    ids = batch.decoded_frames
    keep = batch.mask_valid[:, ids].reshape(-1)
    return out.mask_logits[keep], batch.masks[:, ids].flatten(0, 1)[keep]


def clip_class_logits(class_logits: torch.Tensor, clips: int) -> torch.Tensor:
    """[B*t, C] frame logits -> [B, C]: one class prediction per clip (the mean over its frames)."""
    return class_logits.reshape(clips, -1, class_logits.shape[-1]).mean(1)
