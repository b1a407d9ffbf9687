"""Decoded clips of one split, held once in memory (and in a disk cache) so that no epoch decodes
a PNG or runs the frozen audio encoder again.

Cache entries (`clips/<key>.pt`, `audio/<key>.pt`) are keyed by content: the key of a decoded split
covers the size and modification time of every file it was decoded from, so overwriting a frame,
mask or wav decodes the split again. Each entry has a sidecar `<key>.json` with its sha256, checked
before the entry is believed; a damaged entry is rebuilt with a note on stderr. One process builds
an entry at a time (a lock file beside it); the others wait and then read it.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from clavs.utils.io import atomic_write, atomic_write_json, sha256_file
from clavs.utils.locks import file_lock
from clavs.utils.paths import cache_home

_CACHE_VERSION = "2"  # 2: keyed by every source file's size and mtime; sha256 sidecar


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


def source_files(dataset: Any, index: int) -> list[Path]:
    """The files decode_split reads for clip `index`: frames, masks and the wav."""
    files = dataset.files(index)
    return [*files.frames, *(m for m in files.masks if m is not None), files.wav]


def dataset_key(dataset: Any, split: str, image_size: int) -> str:
    """Identify a decoded split by its tree, split, size, records, and the size and mtime of the CSV
    and of every file its clips are decoded from (one stat per file)."""
    from clavs.data.avsbench import AVSBenchFileError

    root = Path(dataset.root).resolve()
    h = hashlib.sha1(f"{_CACHE_VERSION}|{type(dataset).__name__}|{root}|{split}|{image_size}".encode())
    for i, record in enumerate(dataset.records):
        h.update(f"|{record.name}".encode())
        for path in source_files(dataset, i):
            try:
                st = path.stat()
            except FileNotFoundError:
                raise AVSBenchFileError(f"{path}: missing (video {record.name!r} of the {split} split); "
                                        f"`clavs data check {dataset.root}` lists every problem") from None
            h.update(f"|{st.st_size}|{st.st_mtime_ns}".encode())
    stat = metadata_csv(dataset).stat()
    h.update(f"|csv|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr, flush=True)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def entry_problem(path: Path) -> str | None:
    """None if cache entry `path` exists and matches the sha256 its sidecar records, else why not."""
    if not path.exists():
        return "absent"
    try:
        record = json.loads(_sidecar(path).read_text())
        if not isinstance(record, dict) or record.get("size") != path.stat().st_size \
                or record.get("sha256") != sha256_file(path):
            return "its sha256 differs from the one recorded"
    except FileNotFoundError:
        return f"no {_sidecar(path).name} records its sha256"
    except (OSError, ValueError) as e:
        return f"its record is unreadable ({e})"
    return None


def _remove(path: Path) -> None:
    for p in (path, _sidecar(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            from clavs.errors import CacheError

            raise CacheError(f"{p}: a damaged cache entry cannot be removed ({e.strerror or e}); delete it, or point "
                             f"CLAVS_HOME at a writable folder") from None


def write_entry(path: Path, obj: Any) -> None:
    """torch.save `obj` atomically, then its sidecar (sha256, size): the sidecar marks it complete."""
    atomic_write(path, lambda f: torch.save(obj, f), "wb")
    atomic_write_json(_sidecar(path), {"sha256": sha256_file(path), "size": path.stat().st_size})


def _load_entry(path: Path, **kwargs: Any) -> Any:
    """torch.load a verified entry (weights_only, so no code runs); None if it cannot be read."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **kwargs)
    except Exception:  # a cache of another clavs or torch version: built again (under the lock)
        return None


def _collate_decode(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames": torch.stack([(it["frames"] * 255).round().to(torch.uint8) for it in items]),
        "masks": torch.stack([it["masks"].to(torch.uint8) for it in items]),
        "mask_valid": torch.stack([it["mask_valid"] for it in items]),
        "labels": torch.tensor([int(it["label"]) for it in items]),
        "waveforms": torch.stack([torch.as_tensor(it["audio_wav"], dtype=torch.float32) for it in items]),
        "video_ids": [it["video_id"] for it in items],
    }


class _Items(Dataset):
    """The dataset's items, with a read error returned as a value: raised in the main process, it
    names the file without the DataLoader worker's traceback text."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Any:
        try:
            return self.dataset[i]
        except (OSError, ValueError) as e:
            return _ReadError(type(e).__name__, str(e))


@dataclass
class _ReadError:
    kind: str
    message: str


def _collate_or_error(items: list[Any]) -> Any:
    for it in items:
        if isinstance(it, _ReadError):
            return it
    return _collate_decode(items)


def _load_clips(path: Path, key: str) -> ClipStore | None:
    """The verified entry at `path` as a ClipStore, or None."""
    if entry_problem(path) is not None:
        return None
    blob = _load_entry(path, mmap=True)
    try:
        return ClipStore(**blob, key=key) if isinstance(blob, dict) else None
    except TypeError:  # other fields: another version's entry
        return None


def decode_split(dataset: Any, key: str, *, use_cache: bool = True,
                 progress: Callable[[int, int], None] | None = None, workers: int = 0) -> ClipStore:
    """Decode every clip of `dataset` once (frames unnormalised, waveforms), cached on disk under `key`
    (see dataset_key); the entry is verified before use and built by one process at a time."""
    path = cache_home() / "clips" / f"{key}.pt"
    if not use_cache:
        return _decode(dataset, key, progress, workers)
    store = _load_clips(path, key)
    if store is not None:
        return store
    with file_lock(path.with_suffix(".lock"), f"the decoded-clip cache entry {path.name}"):
        store = _load_clips(path, key)  # another process may have built it while we waited
        if store is not None:
            return store
        if path.exists():
            _note(f"decoded-clip cache entry {path} is damaged or unverified ({entry_problem(path) or 'unreadable'}); "
                  f"decoding again")
            _remove(path)
        store = _decode(dataset, key, progress, workers)
        write_entry(path, {"frames": store.frames, "masks": store.masks, "mask_valid": store.mask_valid,
                           "labels": store.labels, "waveforms": store.waveforms, "video_ids": store.video_ids})
    return store


def _decode(dataset: Any, key: str, progress: Callable[[int, int], None] | None, workers: int) -> ClipStore:
    from clavs.data.avsbench import AVSBenchFileError

    if len(dataset) == 0:
        raise AVSBenchFileError(f"{dataset.root}: the {dataset.split} split lists no videos; "
                                f"`clavs data check {dataset.root}` says which protocols the tree can serve")
    loader = DataLoader(_Items(dataset), batch_size=16, shuffle=False, num_workers=workers,
                        collate_fn=_collate_or_error)
    parts: list[dict[str, Any]] = []
    done = 0
    for part in loader:
        if isinstance(part, _ReadError):
            raise AVSBenchFileError(part.message)
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
    return ClipStore(**blob, key=key)


def embedding_numerics(device: torch.device) -> str:
    """What the embeddings' numbers depend on besides data and weights: the CPU kernels (kernel_tag),
    or the accelerator's kind and model (a GPU's kernels round differently from the CPU's and from
    another model's, e.g. TF32 convolutions), so that a cache entry serves only the same numerics."""
    from clavs.utils.kernels import kernel_tag

    if device.type == "cpu":
        return kernel_tag()  # the key of every CPU entry made before embedding could run elsewhere
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return f"{device.type}:{name}"


@torch.no_grad()
def embed_audio(store: ClipStore, encoder: torch.nn.Module, encoder_id: str, *,
                batch_size: int = 256, use_cache: bool = True, device: torch.device | str = "cpu",
                progress: Callable[[int, int], None] | None = None) -> None:
    """Run the frozen audio encoder once over every frame-second, `batch_size` at a time on `device`
    (the run's accelerator); cached by (data, encoder, numerics of the device)."""
    device = torch.device(device)
    key = hashlib.sha1(f"{store.key}|{encoder_id}|{embedding_numerics(device)}".encode()).hexdigest()[:16]
    path = cache_home() / "audio" / f"{key}.pt"
    if not use_cache:
        _embed(store, encoder, batch_size, device, progress)
        return

    def cached() -> torch.Tensor | None:
        if entry_problem(path) is not None:
            return None
        audio = _load_entry(path)
        return audio if isinstance(audio, torch.Tensor) and audio.shape[0] == len(store) else None

    store.audio = cached()
    if store.audio is not None:
        return
    with file_lock(path.with_suffix(".lock"), f"the audio-embedding cache entry {path.name}"):
        store.audio = cached()  # another process may have built it while we waited
        if store.audio is not None:
            return
        if path.exists():
            _note(f"audio-embedding cache entry {path} is damaged or unverified "
                  f"({entry_problem(path) or 'unreadable'}); embedding again")
            _remove(path)
        _embed(store, encoder, batch_size, device, progress)
        write_entry(path, store.audio)


def _embed(store: ClipStore, encoder: torch.nn.Module, batch_size: int, device: torch.device,
           progress: Callable[[int, int], None] | None) -> None:
    assert store.waveforms is not None, "waveforms are needed to embed audio"
    N, T, S = store.waveforms.shape
    flat = store.waveforms.reshape(N * T, S)
    encoder.to(device).eval()
    rate = int(getattr(encoder, "sample_rate", 16000))
    outs = []
    for i in range(0, flat.shape[0], batch_size):
        chunk = flat[i : i + batch_size]
        if rate != 16000:  # AVSBench audio is 16 kHz; e.g. the 32 kHz Cnn14 needs it resampled (float64, on the CPU)
            from clavs.models.encoders.cnn14 import resample_audio

            chunk = resample_audio(chunk, 16000, rate)
        chunk = chunk.to(device, non_blocking=True)
        outs.append(encoder.embed(chunk).float().cpu())
        if progress:
            progress(min(i + batch_size, flat.shape[0]), flat.shape[0])
    store.audio = torch.cat(outs).reshape(N, T, -1).contiguous()


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
