"""Decoded clips of one split, held once in memory (and in a disk cache) so that no epoch decodes
a PNG or runs the frozen audio encoder again."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from clavs.utils.io import atomic_write
from clavs.utils.paths import cache_home

_CACHE_VERSION = "1"


@dataclass
class ClipStore:
    """All clips of one split: uint8 frames [N,T,3,S,S], uint8 masks [N,T,1,S,S], mask_valid [N,T],
    S4 labels [N] (-1 for MS3), 16 kHz waveform per frame-second [N,T,16000] (until embedded),
    and the frozen audio encoder's embeddings [N,T,D] once computed."""

    frames: torch.Tensor
    masks: torch.Tensor
    mask_valid: torch.Tensor
    labels: torch.Tensor
    video_ids: list[str]
    waveforms: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    key: str = ""  # dataset_key of the decoded split (names its caches); not stored in the cache

    def __len__(self) -> int:
        return self.frames.shape[0]


def metadata_csv(dataset: Any) -> Path:
    from clavs.data.avsbench import ms3_csv_path, s4_csv_path

    return (s4_csv_path if dataset.kind == "s4" else ms3_csv_path)(dataset.root)


def dataset_key(dataset: Any, split: str, image_size: int) -> str:
    """Identify a decoded split by its tree, split, size, records and the CSV's size and mtime."""
    root = Path(dataset.root).resolve()
    stat = metadata_csv(dataset).stat()
    names = hashlib.sha1("|".join(r.name for r in dataset.records).encode()).hexdigest()
    blob = f"{_CACHE_VERSION}|{type(dataset).__name__}|{root}|{split}|{image_size}|{stat.st_size}|{stat.st_mtime_ns}|{names}"
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def _collate_decode(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames": torch.stack([(it["frames"] * 255).round().to(torch.uint8) for it in items]),
        "masks": torch.stack([it["masks"].to(torch.uint8) for it in items]),
        "mask_valid": torch.stack([it["mask_valid"] for it in items]),
        "labels": torch.tensor([int(it["label"]) for it in items]),
        "waveforms": torch.stack([torch.as_tensor(it["audio_wav"], dtype=torch.float32) for it in items]),
        "video_ids": [it["video_id"] for it in items],
    }


def decode_split(dataset: Any, key: str, *, use_cache: bool = True,
                 progress: Callable[[int, int], None] | None = None, workers: int = 0) -> ClipStore:
    """Decode every clip of `dataset` once (frames unnormalised, waveforms), cached on disk under `key`
    (see dataset_key)."""
    path = cache_home() / "clips" / f"{key}.pt"
    if use_cache and path.exists():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return ClipStore(**blob, key=key)
        except Exception:  # a cache from another version: rebuild it
            pass
    loader = DataLoader(dataset, batch_size=16, shuffle=False, num_workers=workers, collate_fn=_collate_decode)
    parts: list[dict[str, Any]] = []
    done = 0
    for part in loader:
        parts.append(part)
        done += len(part["video_ids"])
        if progress:
            progress(done, len(dataset))
    blob = {
        "frames": torch.cat([p["frames"] for p in parts]),
        "masks": torch.cat([p["masks"] for p in parts]),
        "mask_valid": torch.cat([p["mask_valid"] for p in parts]),
        "labels": torch.cat([p["labels"] for p in parts]),
        "waveforms": torch.cat([p["waveforms"] for p in parts]),
        "video_ids": [v for p in parts for v in p["video_ids"]],
    }
    if use_cache:
        atomic_write(path, lambda f: torch.save(blob, f), "wb")
    return ClipStore(**blob, key=key)


@torch.no_grad()
def embed_audio(store: ClipStore, encoder: torch.nn.Module, encoder_id: str, *,
                batch_size: int = 256, use_cache: bool = True,
                progress: Callable[[int, int], None] | None = None) -> None:
    """Run the frozen audio encoder once over every frame-second; cached by (data, encoder)."""
    from clavs.utils.kernels import kernel_tag

    key = hashlib.sha1(f"{store.key}|{encoder_id}|{kernel_tag()}".encode()).hexdigest()[:16]
    path = cache_home() / "audio" / f"{key}.pt"
    if use_cache and path.exists():
        store.audio = torch.load(path, map_location="cpu", weights_only=True)
        return
    assert store.waveforms is not None, "waveforms are needed to embed audio"
    N, T, S = store.waveforms.shape
    flat = store.waveforms.reshape(N * T, S)
    encoder.eval()
    rate = int(getattr(encoder, "sample_rate", 16000))
    outs = []
    for i in range(0, flat.shape[0], batch_size):
        chunk = flat[i : i + batch_size]
        if rate != 16000:  # AVSBench audio is 16 kHz; e.g. the 32 kHz Cnn14 needs it resampled
            from clavs.models.encoders.cnn14 import resample_audio

            chunk = resample_audio(chunk, 16000, rate)
        outs.append(encoder.embed(chunk).float())
        if progress:
            progress(min(i + batch_size, flat.shape[0]), flat.shape[0])
    store.audio = torch.cat(outs).reshape(N, T, -1).contiguous()
    if use_cache:
        atomic_write(path, lambda f: torch.save(store.audio, f), "wb")


class ClipSubset(Dataset):
    """The clips of one task in one split, as items of a `Batch` (frames and masks still uint8:
    `Batch.prepared()` makes them float once per batch, on the device)."""

    def __init__(self, store: ClipStore, indices: Sequence[int], class_index: torch.Tensor, task_id: int):
        self.store = store
        self.indices = list(indices)
        self.class_index = class_index
        self.task_id = task_id

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = self.indices[i]
        s = self.store
        return {
            "frames": s.frames[j],
            "masks": s.masks[j],
            "mask_valid": s.mask_valid[j],
            "audio": s.audio[j],
            "class_index": self.class_index[j],
            "task_id": torch.tensor(self.task_id),
            "index": torch.tensor(j),
        }
