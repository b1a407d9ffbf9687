"""`clavs data check ROOT`: validate a whole AVSBench-object tree and report every problem at once.

Checks: both metadata CSVs exist and parse (every bad row reported); every row's frames, masks,
wav and log-mel pickle exist; every PNG fully decodes (CRC-verified, fully loaded, ends with an IEND
chunk, so truncated files are caught); frame sizes agree within a video and across the tree; masks
are single-channel, 0/255 and the size of their frames; wavs are readable, 16 kHz, mono, ~5 s; pickles
unpickle (without running code from them) to a finite [5,1,96,64] tensor; every category has
videos in every split the protocols use (and the report says which protocols the tree can serve).
Every file is read once; videos are checked on a thread pool
so file reads overlap with decoding (about 0.3 s per 100 videos of 224x224 frames with a warm cache).

Problems are errors (the readers would fail or read wrong data) or warnings (the readers cope, but
the data differs from the released AVSBench); the exit code is non-zero iff there is an error.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import soundfile as sf
from PIL import Image

from clavs.data.audio import load_logmel_pickle
from clavs.data.avsbench import (
    MS3_DIR,
    S4_DIR,
    SAMPLE_RATE,
    Kind,
    VideoFiles,
    ms3_csv_path,
    parse_metadata_lines,
    s4_csv_path,
    video_files,
)
from clavs.data.records import VideoRecord

Severity = Literal["error", "warning"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # zero-length IEND chunk with its CRC: the last 12 bytes
WAV_SECONDS, WAV_TOLERANCE_S = 5.0, 0.1
# Released AVSBench-object split sizes (shared/reference/avsbench.md: S4 from a public loader's docstring,
# consistent with the ACL-SSL README file counts; MS3 from the ACL-SSL README), shown for comparison only.
OFFICIAL_COUNTS = {"s4": {"train": 3452, "val": 740, "test": 740}, "ms3": {"train": 296, "val": 64, "test": 64}}


@dataclass(frozen=True)
class Problem:
    """One problem with one file (or folder, or CSV row); `str()` names the file first."""

    path: Path
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        tag = "" if self.severity == "error" else "warning: "
        return f"{self.path}: {tag}{self.message}"


@dataclass
class _VideoResult:
    problems: list[Problem] = field(default_factory=list)
    frame_size: tuple[int, int] | None = None  # (W, H) of the video's frames when they agree

    def error(self, path: Path, message: str) -> None:
        self.problems.append(Problem(Path(path), message, "error"))

    def warn(self, path: Path, message: str) -> None:
        self.problems.append(Problem(Path(path), message, "warning"))


@dataclass(frozen=True)
class _Task:
    kind: Kind
    csv_path: Path
    line: int
    record: VideoRecord
    files: VideoFiles


# ----------------------------------------------------------------------------- single files


def _without_path(message: str, path: Path) -> str:
    """A library's error message without the file name: the report line names the file once, first."""
    message = message.replace(f"'{path}'", "").replace(str(path), "")
    return " ".join(message.split()).replace(" :", ":")


def _decode_png(path: Path, result: _VideoResult) -> Image.Image | None:
    """Read a PNG once and decode it completely; report and return None if it is broken."""
    try:
        data = path.read_bytes()
    except OSError as e:
        result.error(path, f"cannot read file: {e}")
        return None
    if not data.startswith(PNG_SIGNATURE):
        result.error(path, "not a PNG file (bad signature)")
        return None
    if not data.endswith(PNG_IEND):
        # Pillow happily decodes a PNG cut after its last image chunk; the missing IEND gives it away.
        result.error(path, f"truncated PNG (no IEND chunk at the end; {len(data)} bytes)")
        return None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # chunk CRCs
        im = Image.open(io.BytesIO(data))
        im.load()  # full decode: raises on truncated or corrupt image data
        return im
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        result.error(path, f"PNG does not decode: {type(e).__name__}: {e}")
        return None


def _check_frames(paths: tuple[Path, ...], result: _VideoResult) -> None:
    sizes: dict[Path, tuple[int, int]] = {}
    for path in paths:
        im = _decode_png(path, result)
        if im is None:
            continue
        if im.mode != "RGB":
            result.warn(path, f"frame is mode {im.mode!r}, not RGB (the reader converts it)")
        sizes[path] = im.size
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{p.name} {w}x{h}" for p, (w, h) in sizes.items())
        result.error(paths[0].parent, f"frames of one video differ in size: {listing}")
    elif sizes:
        result.frame_size = next(iter(sizes.values()))


def _check_mask(path: Path, result: _VideoResult) -> None:
    im = _decode_png(path, result)
    if im is None:
        return
    if im.mode not in ("L", "1", "P"):
        result.error(path, f"mask is mode {im.mode!r}; expected a single-channel (L) 0/255 PNG")
        return
    if im.mode == "P":
        result.warn(path, "mask is a palette PNG; the reader uses its grey levels, the official MS3 loader "
                          "would read palette indices")
    if result.frame_size is not None and im.size != result.frame_size:
        (fw, fh), (mw, mh) = result.frame_size, im.size
        result.error(path, f"mask is {mw}x{mh} but the video's frames are {fw}x{fh}")
    counts = np.bincount(np.asarray(im.convert("L")).ravel(), minlength=256)
    grey = np.flatnonzero(counts[1:255]) + 1
    if grey.size:
        shown = ", ".join(str(v) for v in grey[:8]) + (", ..." if grey.size > 8 else "")
        result.warn(path, f"mask is not binary: {int(counts[grey].sum())} pixels with grey levels {shown} "
                          f"(the reader binarises at > 127)")


def _check_wav(path: Path, result: _VideoResult) -> None:
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile errors have assorted types
        result.error(path, f"wav does not read: {type(e).__name__}: {_without_path(str(e), path)}")
        return
    if sr != SAMPLE_RATE:
        result.error(path, f"sample rate {sr} Hz, expected {SAMPLE_RATE} Hz")
    if data.shape[1] != 1:
        result.warn(path, f"{data.shape[1]} channels, expected mono (the reader averages them)")
    if data.shape[0] == 0:
        result.error(path, "wav holds no samples")
        return
    seconds = data.shape[0] / sr
    if abs(seconds - WAV_SECONDS) > WAV_TOLERANCE_S:
        result.warn(path, f"lasts {seconds:.3f} s, expected ~{WAV_SECONDS:g} s (the reader zero-pads or cuts)")
    if not np.isfinite(data).all():
        result.error(path, "wav contains NaN or inf samples")


def _check_logmel(path: Path, result: _VideoResult) -> None:
    try:
        tensor = load_logmel_pickle(path)  # checks that it is a tensor of LOGMEL_SHAPE, names the file
    except Exception as e:
        result.error(path, _without_path(str(e), path) or type(e).__name__)
        return
    if not bool(tensor.isfinite().all()):
        result.error(path, "log-mel tensor contains NaN or inf")


# ----------------------------------------------------------------------------- one video


def _describe_group(label: str, paths: list[Path]) -> str:
    """'frames <dir>/{a.png, b.png} (folder missing)' or 'wav <path>'."""
    folder = paths[0].parent
    names = paths[0].name if len(paths) == 1 else "{" + ", ".join(p.name for p in paths) + "}"
    state = "" if folder.is_dir() else " (folder missing)"
    return f"{label} {folder}/{names}{state}"


def _check_existence(task: _Task, result: _VideoResult) -> set[Path]:
    """Report missing files (grouped so a missing folder is one problem); return the missing set."""
    files, row = task.files, f"{task.csv_path.name} line {task.line}, video {task.record.name!r}"
    groups = {
        "frames": list(files.frames),
        "masks": [m for m in files.masks if m is not None],
        "wav": [files.wav],
        "log-mel pickle": [files.logmel],
    }
    missing = {p for paths in groups.values() for p in paths if not p.is_file()}
    total = sum(len(paths) for paths in groups.values())
    if len(missing) == total:
        listing = "; ".join(_describe_group(label, paths) for label, paths in groups.items())
        result.error(files.frames[0].parent, f"{row}: none of its {total} files exist: {listing}")
        return missing
    for label, paths in groups.items():
        gone = [p for p in paths if p in missing]
        if not gone:
            continue
        folder = paths[0].parent
        if len(gone) == len(paths) > 1:
            state = "folder missing" if not folder.is_dir() else "folder has none of them"
            result.error(folder, f"{row}: all {len(paths)} {label} missing ({state}): "
                                 f"{', '.join(p.name for p in gone)}")
        else:
            for p in gone:
                result.error(p, f"{row}: {label} file missing")
    return missing


def _check_video(task: _Task) -> _VideoResult:
    result = _VideoResult()
    missing = _check_existence(task, result)
    files = task.files
    _check_frames(tuple(p for p in files.frames if p not in missing), result)
    for mask in files.masks:
        if mask is not None and mask not in missing:
            _check_mask(mask, result)
    if files.wav not in missing:
        _check_wav(files.wav, result)
    if files.logmel not in missing:
        _check_logmel(files.logmel, result)
    return result


# ----------------------------------------------------------------------------- the tree


def _read_tasks(root: Path, kind: Kind, problems: list[Problem]) -> list[_Task]:
    csv_path = s4_csv_path(root) if kind == "s4" else ms3_csv_path(root)
    if not csv_path.is_file():
        problems.append(Problem(csv_path, "metadata CSV missing"))
        return []
    try:
        rows, errors = parse_metadata_lines(csv_path, kind)
    except (OSError, UnicodeDecodeError) as e:
        problems.append(Problem(csv_path, f"cannot read CSV: {e}"))
        return []
    problems.extend(Problem(csv_path, f"line {e.line}: {e.message}") for e in errors)
    tasks, seen = [], {}
    for line, record in rows:
        files = video_files(root, kind, record)
        # Two rows mapping to the same files would be read as the same video.
        key = files.frames[0]
        if key in seen:
            problems.append(Problem(csv_path, f"line {line}: video {record.name!r} duplicates line {seen[key]} "
                                              f"(same frame files {key.parent})"))
            continue
        seen[key] = line
        tasks.append(_Task(kind, csv_path, line, record, files))
    return tasks


def _size_outliers(tasks: list[_Task], results: list[_VideoResult]) -> Iterator[Problem]:
    """Warn about videos whose frame size differs from the tree's most common one (per subset)."""
    for kind in ("s4", "ms3"):
        sized = [(t, r.frame_size) for t, r in zip(tasks, results) if t.kind == kind and r.frame_size]
        if not sized:
            continue
        (common, count), = Counter(size for _, size in sized).most_common(1)
        for task, size in sized:
            if size != common:
                yield Problem(task.files.frames[0].parent,
                              f"frames are {size[0]}x{size[1]} while {count} of {len(sized)} {kind.upper()} videos "
                              f"have {common[0]}x{common[1]} (the reader resizes to image_size)", "warning")


def _root_problem(root: Path) -> Problem | None:
    if (root / S4_DIR).is_dir() or (root / MS3_DIR).is_dir():
        return None
    hint = ""
    for candidate in (root / "avsbench_data", root.parent):
        if (candidate / S4_DIR).is_dir() or (candidate / MS3_DIR).is_dir():
            hint = f"; did you mean {candidate}?"
    what = "does not exist" if not root.exists() else f"holds neither {S4_DIR}/ nor {MS3_DIR}/"
    return Problem(root, f"dataset root {what}{hint}")


def check_tree(root: str | os.PathLike, progress: bool = True, workers: int | None = None) -> list[Problem]:
    """Validate an AVSBench-object tree (the folder holding Single-source/ and Multi-sources/).

    Returns every problem found (errors and warnings), CSV problems first, then per video in CSV
    order. `workers` threads (default: 2 per core, at most 8) read the files.
    """
    root = Path(root)
    problem = _root_problem(root)
    if problem is not None:
        return [problem]
    problems: list[Problem] = []
    tasks = _read_tasks(root, "s4", problems) + _read_tasks(root, "ms3", problems)
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results_iter = pool.map(_check_video, tasks)
        if progress and tasks:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (TextColumn("checking videos"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
            # On stderr, so the report on stdout stays clean when redirected.
            with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
                job = bar.add_task("check", total=len(tasks))
                results = []
                for result in results_iter:
                    results.append(result)
                    bar.advance(job)
        else:
            results = list(results_iter)
    for result in results:
        problems.extend(result.problems)
    problems.extend(_size_outliers(tasks, results))
    return problems


def _count_rows(root: Path) -> dict[str, Counter]:
    counts: dict[str, Counter] = {}
    for kind, path in (("s4", s4_csv_path(root)), ("ms3", ms3_csv_path(root))):
        try:
            rows, _ = parse_metadata_lines(path, kind)
        except (OSError, UnicodeDecodeError):
            continue
        counts[kind] = Counter(record.split for _, record in rows)
    return counts


def protocol_report(root: Path) -> tuple[list[Problem], list[str]]:
    """What the protocols need from the CSV rows (every category in every split they use): problems,
    and one line per subset saying which protocols the tree can serve."""
    from clavs.config import DEFAULT_SPLITS
    from clavs.protocols.requirements import PROTOCOL_SUBSET, subset_needs

    problems: list[Problem] = []
    lines: list[str] = []
    for kind, path in (("s4", s4_csv_path(root)), ("ms3", ms3_csv_path(root))):
        protocols = [p for p, k in PROTOCOL_SUBSET.items() if k == kind]
        names = ", ".join(protocols)
        try:
            rows, _ = parse_metadata_lines(path, kind)
        except (OSError, UnicodeDecodeError):
            lines.append(f"{kind.upper()}: cannot serve {names} (no readable {path.name})")
            continue
        needs = subset_needs(kind, [record for _, record in rows], DEFAULT_SPLITS[protocols[0]])
        problems.extend(Problem(path, f"{message}: {names} cannot run on this tree") for message in needs.errors)
        problems.extend(Problem(path, message, "warning") for message in needs.warnings)
        if needs.errors:
            lines.append(f"{kind.upper()}: cannot serve {names} ({'; '.join(needs.errors)})")
        else:
            extra = f" ({'; '.join(needs.notes)})" if needs.notes else ""
            lines.append(f"{kind.upper()}: can serve {names}{extra}")
    return problems, lines


def check_main(root: str | os.PathLike) -> int:
    """CLI entry: print every problem, then a summary line; return 0 if there is no error, else 1."""
    root = Path(root)
    problems = check_tree(root, progress=True)
    served: list[str] = []
    if _root_problem(root) is None:
        needs, served = protocol_report(root)
        problems.extend(needs)
    for problem in problems:
        print(problem)
    for kind, counts in _count_rows(root).items():
        official = OFFICIAL_COUNTS[kind]
        listing = " / ".join(f"{counts.get(s, 0)} {s}" for s in official)
        reference = " / ".join(str(n) for n in official.values())
        print(f"{kind.upper()}: {listing} videos listed (released AVSBench: {reference})")
    for line in served:
        print(line)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    verdict = "FAILED" if errors else "OK"
    print(f"{verdict}: {errors} error(s), {warnings} warning(s) in {root}")
    return 1 if errors else 0
