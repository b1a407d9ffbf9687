"""Test helper: write a tiny AVSBench-object tree in the official layout and remember what was written.

Paths are spelled out here independently of `clavs.data.avsbench` (so reading the tree back tests
the reader's path mapping), and the audio files are written with plain `pickle.dump` of a tensor
with requires_grad=True and `soundfile.write`, as the official preprocess scripts do.
"""

from __future__ import annotations

import csv
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from PIL import Image

SR = 16000

# (name, category, split); 2 categories across all three splits.
S4_VIDEOS: list[tuple[str, str, str]] = [
    ("s4dogA", "dog_barking", "train"),
    ("s4dogB", "dog_barking", "train"),
    ("s4heliA", "helicopter", "train"),
    ("s4dogV", "dog_barking", "val"),
    ("s4heliV", "helicopter", "val"),
    ("s4dogT", "dog_barking", "test"),
    ("s4heliT", "helicopter", "test"),
]
# (name, split, sources)
MS3_VIDEOS: list[tuple[str, str, tuple[str, ...]]] = [
    ("ms3A", "train", ("dog_barking", "helicopter")),
    ("ms3B", "train", ("male_speech", "playing_piano", "race_car")),
    ("ms3V", "val", ("cat_meowing", "dog_barking")),
    ("ms3T", "test", ("female_singing", "playing_violin")),
]
SHORT_WAV = "s4dogV"   # 4.5 s: the last second is zero-padded by the reader
LONG_WAV = "ms3V"      # 5.3 s: cut to 5 s by the reader
GREY_MASK = "s4heliV"  # frame 1 mask holds grey levels 0/100/127/128/200/255 (only with grey_mask=True)
MODE1_MASK = "ms3T"    # masks saved as 1-bit PNGs (mode '1')


@dataclass
class VideoTruth:
    """What was written for one video (pixel arrays as written, audio as read back from disk)."""

    kind: str
    name: str
    split: str
    category: str | None
    frames: list[np.ndarray]                 # 5 x uint8 [H,W,3]
    masks: list[np.ndarray | None]           # 5 x uint8 [H,W] grey levels, None where no ground truth
    logmel: torch.Tensor                     # [5,1,96,64]
    wav: np.ndarray                          # float mono as soundfile reads it back
    domain: str | None = None
    sources: tuple[str, ...] = ()
    paths: dict[str, list[Path]] = field(default_factory=dict)  # 'frames', 'masks', 'wav', 'pkl'


@dataclass
class AVSTree:
    root: Path
    videos: dict[str, VideoTruth]

    def s4(self, split: str) -> list[VideoTruth]:
        return [v for v in self.videos.values() if v.kind == "s4" and v.split == split]

    def ms3(self, split: str) -> list[VideoTruth]:
        return [v for v in self.videos.values() if v.kind == "ms3" and v.split == split]


def _save_png(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode == "1":
        img = img.convert("1")
    img.save(path)


def _write_audio(truth: VideoTruth, wav_path: Path, pkl_path: Path, rng: np.random.Generator, seconds: float) -> None:
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    pkl_path.parent.mkdir(parents=True, exist_ok=True)
    n = int(round(seconds * SR))
    # Each second has its own level, so a wrong per-second cut is visible.
    level = 0.1 + 0.15 * np.repeat(np.arange(6), SR)[:n]
    sf.write(wav_path, (level * rng.uniform(-1, 1, n)).astype(np.float32), SR, subtype="PCM_16")
    truth.wav, _ = sf.read(wav_path, dtype="float32")
    gen = torch.Generator().manual_seed(int(rng.integers(1 << 31)))
    logmel = torch.randn(5, 1, 96, 64, generator=gen, requires_grad=True)
    with open(pkl_path, "wb") as f:
        pickle.dump(logmel, f)
    truth.logmel = logmel.detach().clone()
    truth.paths["wav"], truth.paths["pkl"] = [wav_path], [pkl_path]


def _random_mask(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(hw, dtype=np.uint8)
    y0, x0 = rng.integers(0, hw[0] // 2), rng.integers(0, hw[1] // 2)
    y1, x1 = y0 + rng.integers(2, hw[0] // 2), x0 + rng.integers(2, hw[1] // 2)
    mask[y0:y1, x0:x1] = 255
    return mask


def write_avs_tree(root: str | Path, *, extra_columns: bool = False, frame_hw: tuple[int, int] = (24, 32),
                   grey_mask: bool = False, odd_wav_lengths: bool = True, seed: int = 0) -> AVSTree:
    """Write the S4 and MS3 videos above under `root` (the folder holding Single-source/, Multi-sources/).

    extra_columns: write SynthAVS-style CSVs (S4 `name,start,category,split,domain`; MS3
    `name,split,domain,sources`) instead of the official ones (`name,start,category,split`; `name,split`).
    grey_mask: give GREY_MASK's frame-1 mask grey levels (the checker warns about it).
    odd_wav_lengths: make SHORT_WAV 4.5 s and LONG_WAV 5.3 s (the checker warns about them).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    videos: dict[str, VideoTruth] = {}

    s4 = root / "Single-source" / "s4_data"
    s4_rows = []
    for i, (name, cat, split) in enumerate(S4_VIDEOS):
        truth = VideoTruth("s4", name, split, cat, [], [], torch.empty(0), np.empty(0), domain=f"d{i % 2}")
        frame_dir = s4 / "visual_frames" / split / cat / name
        mask_dir = s4 / "gt_masks" / split / cat / name
        truth.paths["frames"], truth.paths["masks"] = [], []
        for k in range(1, 6):
            frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
            _save_png(frame_dir / f"{name}_{k}.png", frame)
            truth.frames.append(frame)
            if split == "train" and k > 1:  # S4 train: ground truth on frame 1 only
                truth.masks.append(None)
                continue
            mask = _random_mask(rng, frame_hw)
            if grey_mask and name == GREY_MASK and k == 1:
                mask = rng.choice(np.array([0, 100, 127, 128, 200, 255], dtype=np.uint8), size=frame_hw)
            _save_png(mask_dir / f"{name}_{k}.png", mask)
            truth.masks.append(mask)
            truth.paths["masks"].append(mask_dir / f"{name}_{k}.png")
        truth.paths["frames"] = [frame_dir / f"{name}_{k}.png" for k in range(1, 6)]
        seconds = 4.5 if odd_wav_lengths and name == SHORT_WAV else 5.0
        _write_audio(truth, s4 / "audio_wav" / split / cat / f"{name}.wav",
                     s4 / "audio_log_mel" / split / cat / f"{name}.pkl", rng, seconds)
        start = str(10 * i)
        s4_rows.append([name, start, cat, split] + ([truth.domain] if extra_columns else []))
        videos[name] = truth

    ms3 = root / "Multi-sources" / "ms3_data"
    ms3_rows = []
    for i, (name, split, sources) in enumerate(MS3_VIDEOS):
        truth = VideoTruth("ms3", name, split, None, [], [], torch.empty(0), np.empty(0),
                           domain=f"m{i}", sources=sources)
        frame_dir = ms3 / "visual_frames" / name  # no split level; '.mp4_' infix
        mask_dir = ms3 / "gt_masks" / split / name
        truth.paths["frames"] = [frame_dir / f"{name}.mp4_{k}.png" for k in range(1, 6)]
        truth.paths["masks"] = [mask_dir / f"{name}_{k}.png" for k in range(1, 6)]
        for k in range(1, 6):
            frame = rng.integers(0, 256, (*frame_hw, 3), dtype=np.uint8)
            _save_png(truth.paths["frames"][k - 1], frame)
            mask = _random_mask(rng, frame_hw)
            _save_png(truth.paths["masks"][k - 1], mask, mode="1" if name == MODE1_MASK else None)
            truth.frames.append(frame)
            truth.masks.append(mask)
        seconds = 5.3 if odd_wav_lengths and name == LONG_WAV else 5.0
        _write_audio(truth, ms3 / "audio_wav" / split / f"{name}.wav",
                     ms3 / "audio_log_mel" / split / f"{name}.pkl", rng, seconds)
        ms3_rows.append([name, split] + ([truth.domain, "|".join(sources)] if extra_columns else []))
        videos[name] = truth

    s4_header = ["name", "start", "category", "split"] + (["domain"] if extra_columns else [])
    ms3_header = ["name", "split"] + (["domain", "sources"] if extra_columns else [])
    write_csv(root / "Single-source" / "s4_meta_data.csv", s4_header, s4_rows)
    write_csv(root / "Multi-sources" / "ms3_meta_data.csv", ms3_header, ms3_rows)
    return AVSTree(root, videos)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
