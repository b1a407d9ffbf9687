"""Readers for AVSBench-object (S4 single-source, MS3 multi-source) in the official file layout.

`root` is the folder holding `Single-source/` and `Multi-sources/` (the official `avsbench_data`).
Paths, frame numbering and which frames carry ground truth follow the official loaders
(OpenNLPLab/AVSBench `avs_scripts/avs_s4|avs_ms3/dataloader.py`); SynthAVS writes the same layout,
with extra CSV columns (`domain`, `sources`) that are read into `VideoRecord`.

Layout (S4 has a `<category>` level under the split, MS3 doesn't; MS3 frames have no split level
and carry a `.mp4_` infix):

    Single-source/s4_meta_data.csv                              name,start,category,split[,...]
    Single-source/s4_data/visual_frames/<split>/<cat>/<name>/<name>_<k>.png       k = 1..5
    Single-source/s4_data/gt_masks/<split>/<cat>/<name>/<name>_<k>.png
    Single-source/s4_data/audio_log_mel/<split>/<cat>/<name>.pkl
    Single-source/s4_data/audio_wav/<split>/<cat>/<name>.wav
    Multi-sources/ms3_meta_data.csv                             name,split[,...]
    Multi-sources/ms3_data/visual_frames/<name>/<name>.mp4_<k>.png
    Multi-sources/ms3_data/gt_masks/<split>/<name>/<name>_<k>.png
    Multi-sources/ms3_data/audio_log_mel/<split>/<name>.pkl
    Multi-sources/ms3_data/audio_wav/<split>/<name>.wav
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from clavs.data.audio import load_logmel_pickle, read_wav
from clavs.data.categories import CATEGORY_INDEX, S4_CATEGORIES
from clavs.data.records import VideoRecord

SPLITS: tuple[str, ...] = ("train", "val", "test")
NUM_FRAMES = 5
SAMPLE_RATE = 16000
LOGMEL_SHAPE: tuple[int, ...] = (NUM_FRAMES, 1, 96, 64)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

S4_DIR, S4_CSV, S4_DATA = "Single-source", "s4_meta_data.csv", "s4_data"
MS3_DIR, MS3_CSV, MS3_DATA = "Multi-sources", "ms3_meta_data.csv", "ms3_data"

Kind = Literal["s4", "ms3"]  # which AVSBench-object subset
AudioMode = Literal["logmel", "wav", "both"] | None


class MetadataError(ValueError):
    """A metadata CSV is malformed; the message names the file and every bad row."""


class AVSBenchFileError(OSError):
    """A data file is missing or unreadable; the message names the file."""


# ----------------------------------------------------------------------------- paths


def s4_csv_path(root: str | Path) -> Path:
    return Path(root) / S4_DIR / S4_CSV


def ms3_csv_path(root: str | Path) -> Path:
    return Path(root) / MS3_DIR / MS3_CSV


@dataclass(frozen=True)
class VideoFiles:
    """Every file one CSV row refers to. `masks[k]` is None where frame k has no ground truth."""

    frames: tuple[Path, ...]
    masks: tuple[Path | None, ...]
    logmel: Path
    wav: Path

    def all_paths(self) -> list[Path]:
        return [*self.frames, *(m for m in self.masks if m is not None), self.wav, self.logmel]


def ground_truth_frames(kind: Kind, split: str) -> tuple[bool, ...]:
    """Which of the 5 frames carry a mask: S4 train only frame 1; S4 val/test and MS3 all five."""
    if kind == "s4" and split == "train":
        return (True,) + (False,) * (NUM_FRAMES - 1)
    return (True,) * NUM_FRAMES


def video_files(root: str | Path, kind: Kind, record: VideoRecord) -> VideoFiles:
    """Map a record to its files exactly as the official loaders do (frame/mask numbering 1..5)."""
    name, split = record.name, record.split
    if kind == "s4":
        base = Path(root) / S4_DIR / S4_DATA
        sub = Path(split) / str(record.category)
        frame_dir = base / "visual_frames" / sub / name
        frames = tuple(frame_dir / f"{name}_{k}.png" for k in range(1, NUM_FRAMES + 1))
    elif kind == "ms3":
        base = Path(root) / MS3_DIR / MS3_DATA
        sub = Path(split)
        frame_dir = base / "visual_frames" / name  # MS3 frames: no split level, '.mp4_' infix
        frames = tuple(frame_dir / f"{name}.mp4_{k}.png" for k in range(1, NUM_FRAMES + 1))
    else:
        raise ValueError(f"kind must be 's4' or 'ms3', got {kind!r}")
    mask_dir = base / "gt_masks" / sub / name
    valid = ground_truth_frames(kind, split)
    masks = tuple(mask_dir / f"{name}_{k}.png" if valid[k - 1] else None for k in range(1, NUM_FRAMES + 1))
    return VideoFiles(
        frames=frames,
        masks=masks,
        logmel=base / "audio_log_mel" / sub / f"{name}.pkl",
        wav=base / "audio_wav" / sub / f"{name}.wav",
    )


# ----------------------------------------------------------------------------- metadata CSVs


@dataclass(frozen=True)
class RowError:
    """One bad CSV row: `line` is the 1-based line number in the file (the header is line 1)."""

    csv_path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.csv_path}: line {self.line}: {self.message}"


def _unknown_category_message(value: str) -> str:
    close = difflib.get_close_matches(value, S4_CATEGORIES, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown category {value!r}{hint}; expected one of the 23 S4 categories"


def parse_metadata(csv_path: str | Path, kind: Kind) -> tuple[list[VideoRecord], list[RowError]]:
    """Parse an S4 or MS3 metadata CSV into (records, bad rows); see `parse_metadata_lines`."""
    rows, errors = parse_metadata_lines(csv_path, kind)
    return [record for _, record in rows], errors


def parse_metadata_lines(csv_path: str | Path, kind: Kind) -> tuple[list[tuple[int, VideoRecord]], list[RowError]]:
    """Parse an S4 or MS3 metadata CSV, collecting every bad row instead of stopping at the first.

    Columns are read by position as the official preprocess scripts do (S4: name, start, category;
    MS3: name), the split by its header name `split` as the official loaders filter it. Extra
    columns: `domain` -> record.domain, `sources` ('|'-joined categories) -> record.sources, any
    other -> record.extra. Returns ((line, record) for good rows, bad rows); line numbers are
    1-based file lines (the header is line 1). Raises FileNotFoundError if the file is missing.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"metadata CSV not found: {csv_path}")
    positional = ("name", "start", "category") if kind == "s4" else ("name",)
    records: list[tuple[int, VideoRecord]] = []
    errors: list[RowError] = []
    unreadable = _not_text(csv_path)
    if unreadable is not None:
        return [], [unreadable]
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            return [], [RowError(csv_path, 1, "file is empty (expected a header row)")]
        header = [h.strip() for h in header]
        if "split" not in header:
            return [], [RowError(csv_path, 1, f"header {header} has no 'split' column")]
        split_col = header.index("split")
        if split_col < len(positional):
            expected = ",".join((*positional, "split"))
            return [], [RowError(csv_path, 1, f"header {header}: expected the columns {expected} in this order")]
        extra_cols = [i for i in range(len(header)) if i >= len(positional) and i != split_col]
        for row in reader:
            line = reader.line_num
            if not row or all(not v.strip() for v in row):
                continue  # blank line
            row = [v.strip() for v in row]
            if len(row) != len(header):
                missing = header[len(row):]
                detail = f"; missing column(s) {missing}" if missing else ""
                errors.append(RowError(csv_path, line, f"row has {len(row)} fields but the header has {len(header)}{detail}: {row}"))
                continue
            problems = []
            name, split = row[0], row[split_col]
            if not name:
                problems.append("empty video name")
            if split not in SPLITS:
                problems.append(f"split {split!r} is not one of train/val/test")
            category, label, start = None, -1, None
            if kind == "s4":
                category = row[2]
                if category in CATEGORY_INDEX:
                    label = CATEGORY_INDEX[category]
                else:
                    problems.append(_unknown_category_message(category))
                if row[1]:
                    try:
                        start = float(row[1])
                    except ValueError:
                        problems.append(f"start {row[1]!r} is not a number")
            domain, sources, extra = None, (), []
            for i in extra_cols:
                key, value = header[i], row[i]
                if key == "domain":
                    domain = value or None
                elif key == "sources":
                    sources = tuple(s.strip() for s in value.split("|") if s.strip())
                    problems += [_unknown_category_message(s) + " in 'sources'" for s in sources if s not in CATEGORY_INDEX]
                else:
                    extra.append((key, value))
            if problems:
                errors.append(RowError(csv_path, line, f"video {name!r}: " + "; ".join(problems)))
                continue
            records.append((line, VideoRecord(name=name, split=split, category=category, label=label, start=start,
                                              domain=domain, sources=sources, extra=tuple(extra))))
    return records, errors


def _not_text(csv_path: Path) -> RowError | None:
    """A RowError if the file is not UTF-8 text without NUL bytes (a binary file named .csv)."""
    data = csv_path.read_bytes()
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        return RowError(csv_path, line, f"not a UTF-8 text file (byte {data[e.start:e.start + 1]!r} at offset "
                                        f"{e.start}); is it really the metadata CSV?")
    if b"\0" in data:
        return RowError(csv_path, data[: data.index(b"\0")].count(b"\n") + 1,
                        "holds NUL bytes (a binary file?); is it really the metadata CSV?")
    return None


def _read_metadata(csv_path: Path, kind: Kind) -> list[VideoRecord]:
    records, errors = parse_metadata(csv_path, kind)
    if errors:
        shown = "\n  ".join(str(e) for e in errors[:20])
        more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise MetadataError(f"{csv_path}: {len(errors)} bad row(s):\n  {shown}{more}")
    return records


def read_s4_metadata(root: str | Path) -> list[VideoRecord]:
    """All rows of `<root>/Single-source/s4_meta_data.csv` (every split), in file order."""
    return _read_metadata(s4_csv_path(root), "s4")


def read_ms3_metadata(root: str | Path) -> list[VideoRecord]:
    """All rows of `<root>/Multi-sources/ms3_meta_data.csv` (every split), in file order."""
    return _read_metadata(ms3_csv_path(root), "ms3")


# ----------------------------------------------------------------------------- file loading


def _size_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


def fit_frame(im: Image.Image, size_hw: tuple[int, int] | None) -> np.ndarray:
    """uint8 [H,W,3] RGB of an image, resized bilinearly to `size_hw` when it differs (the one resize
    every frame a model sees goes through: dataset frames and `clavs predict`'s video frames)."""
    im = im.convert("RGB")
    if size_hw is not None and im.size != (size_hw[1], size_hw[0]):
        im = im.resize((size_hw[1], size_hw[0]), Image.Resampling.BILINEAR)
    return np.asarray(im)


def load_frame(path: Path, size_hw: tuple[int, int] | None) -> np.ndarray:
    """uint8 [H,W,3] RGB frame, resized bilinearly to `size_hw` when the file differs."""
    try:
        with Image.open(path) as im:
            return fit_frame(im, size_hw)
    except FileNotFoundError as e:
        raise AVSBenchFileError(f"frame not found: {path}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise AVSBenchFileError(f"cannot decode frame {path}: {e}") from e


def load_mask(path: Path, size_hw: tuple[int, int] | None) -> np.ndarray:
    """bool [H,W] mask: grey level > 127 (the released masks are 0/255), resized with nearest."""
    try:
        with Image.open(path) as im:
            im = im.convert("L")  # '1', 'P' and RGB masks go through luminance; 'L' is unchanged
            if size_hw is not None and im.size != (size_hw[1], size_hw[0]):
                im = im.resize((size_hw[1], size_hw[0]), Image.Resampling.NEAREST)
            return np.asarray(im) > 127
    except FileNotFoundError as e:
        raise AVSBenchFileError(f"mask not found: {path}") from e
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise AVSBenchFileError(f"cannot decode mask {path}: {e}") from e


def wav_per_second(wave: np.ndarray, path: Path, sr: int) -> np.ndarray:
    """Cut a 16 kHz mono waveform into [5, 16000] (one row per frame-second), zero-padding a short clip."""
    if sr != SAMPLE_RATE:
        raise AVSBenchFileError(f"{path}: sample rate {sr} Hz, expected {SAMPLE_RATE} Hz")
    if wave.ndim != 1:
        raise AVSBenchFileError(f"{path}: expected a mono waveform, got shape {tuple(wave.shape)}")
    if not np.isfinite(wave).all():
        raise AVSBenchFileError(f"{path}: the waveform holds NaN or inf samples (a damaged float wav); "
                                f"`clavs data check` lists every such file")
    out = np.zeros((NUM_FRAMES, SAMPLE_RATE), dtype=np.float32)
    clip = wave[: NUM_FRAMES * SAMPLE_RATE]
    out.reshape(-1)[: clip.shape[0]] = clip
    return out


# ----------------------------------------------------------------------------- datasets


class _AVSBenchDataset(Dataset):
    kind: Kind

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        image_size: int | Sequence[int] | None = 224,
        audio: AudioMode = "logmel",
        normalize: bool = True,
        records: Sequence[VideoRecord] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if audio not in ("logmel", "wav", "both", None):
            raise ValueError(f"audio must be 'logmel', 'wav', 'both' or None, got {audio!r}")
        self.root = Path(root)
        self.split = split
        self.size_hw = _size_hw(image_size)
        self.audio = audio
        self.normalize = normalize
        if records is None:
            reader = read_s4_metadata if self.kind == "s4" else read_ms3_metadata
            records = [r for r in reader(self.root) if r.split == split]
        else:
            wrong = [r.name for r in records if r.split != split]
            if wrong:
                raise ValueError(f"{type(self).__name__}(split={split!r}) got records of another split: {wrong[:5]}")
            uncategorised = [r.name for r in records if r.category is None]
            if self.kind == "s4" and uncategorised:  # an S4 path needs the category folder
                raise ValueError(f"AVSBenchS4 got records without a category (MS3 records?): {uncategorised[:5]}")
        self.records: list[VideoRecord] = list(records)
        self._mask_valid = torch.tensor(ground_truth_frames(self.kind, split))

    def __len__(self) -> int:
        return len(self.records)

    def subset(self, indices: Sequence[int]) -> "_AVSBenchDataset":
        """A dataset over `records[i] for i in indices`, same settings, without re-reading the CSV."""
        return type(self)(self.root, self.split, self.size_hw, self.audio, self.normalize,
                          records=[self.records[i] for i in indices])

    def files(self, index: int) -> VideoFiles:
        return video_files(self.root, self.kind, self.records[index])

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        files = video_files(self.root, self.kind, record)
        decoded = [load_frame(p, self.size_hw) for p in files.frames]
        if len({f.shape for f in decoded}) > 1:  # only possible with image_size=None
            raise AVSBenchFileError(f"frames of {files.frames[0].parent} differ in size; pass image_size")
        frames = np.stack(decoded)  # [5,H,W,3] uint8
        h, w = frames.shape[1:3]
        x = frames.astype(np.float32) / 255.0
        if self.normalize:
            x = (x - IMAGENET_MEAN) / IMAGENET_STD
        masks = np.zeros((NUM_FRAMES, 1, h, w), dtype=np.float32)
        for k, path in enumerate(files.masks):
            if path is not None:
                masks[k, 0] = load_mask(path, (h, w))
        item: dict[str, Any] = {
            "frames": torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(),
            "masks": torch.from_numpy(masks),
            "mask_valid": self._mask_valid.clone(),
            "label": record.label,
            "category": record.category or "",
            "video_id": record.name,
            "index": index,
        }
        if self.audio in ("logmel", "both"):
            try:
                item["audio_logmel"] = load_logmel_pickle(files.logmel).float()
            except ValueError as e:  # unreadable (a missing file stays a FileNotFoundError naming it)
                raise AVSBenchFileError(str(e)) from None
        if self.audio in ("wav", "both"):
            try:
                wave, sr = read_wav(files.wav)  # names the file on error; averages channels
            except ValueError as e:  # unreadable (a missing file stays a FileNotFoundError naming it)
                raise AVSBenchFileError(str(e)) from None
            item["audio_wav"] = torch.from_numpy(wav_per_second(np.asarray(wave, dtype=np.float32), files.wav, sr))
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, videos={len(self)}, "
                f"image_size={self.size_hw}, audio={self.audio!r})")


class AVSBenchS4(_AVSBenchDataset):
    """AVSBench S4 (single source): 23 categories; S4 train has ground truth on frame 1 only.

    Item: frames [5,3,H,W] float (ImageNet-normalised if `normalize`), masks [5,1,H,W] in {0,1},
    mask_valid [5] bool, audio_logmel [5,1,96,64] and/or audio_wav [5,16000], label (index in
    S4_CATEGORIES), category, video_id, index.
    """

    kind: Kind = "s4"


class AVSBenchMS3(_AVSBenchDataset):
    """AVSBench MS3 (multiple sources): no category (label -1, category ''); all 5 frames have masks."""

    kind: Kind = "ms3"

# The readers by AVSBench subset (the engine picks one per protocol).
READERS = {"s4": AVSBenchS4, "ms3": AVSBenchMS3}
