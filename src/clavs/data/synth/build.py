"""Building SynthAVS: planning the videos and writing the dataset in the exact AVSBench layout.

`generate(out_root, preset, seed)` writes, under out_root:

    Single-source/s4_meta_data.csv                      name,start,category,split,domain
    Single-source/s4_data/visual_frames/<split>/<category>/<name>/<name>_<k>.png      k = 1..5
    Single-source/s4_data/gt_masks/<split>/<category>/<name>/<name>_<k>.png   train: k = 1; else 1..5
    Single-source/s4_data/audio_wav/<split>/<category>/<name>.wav
    Single-source/s4_data/audio_log_mel/<split>/<category>/<name>.pkl
    Multi-sources/ms3_meta_data.csv                     name,split,domain,sources
    Multi-sources/ms3_data/visual_frames/<name>/<name>.mp4_<k>.png                 (no split level)
    Multi-sources/ms3_data/gt_masks/<split>/<name>/<name>_<k>.png                  k = 1..5
    Multi-sources/ms3_data/audio_wav/<split>/<name>.wav
    Multi-sources/ms3_data/audio_log_mel/<split>/<name>.pkl
    synthavs.json                                        preset, seed, version, counts

Frames are 224x224 RGB PNGs; masks single-channel 'L' PNGs with values 0/255; audio 16 kHz mono
5 s PCM-16 wav; log-mel pickles [5, 1, 96, 64] computed from the written wav (see clavs.data.audio).

Every S4 frame shows the sounding object plus 1-3 silent objects of other categories, so audio is
needed to pick the target; MS3 clips have 2-3 sounding objects and 1-2 silent ones. Silent objects
of any category appear in every task's frames, so a model fine-tuned on new categories learns to
suppress old-category objects: that is how SynthAVS makes plain fine-tuning forget.

Determinism: each video's generator is seeded from (seed, subset, split, index), so the tree is
byte-identical for a seed whatever the number of worker processes.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clavs.data.audio import avsbench_logmel, decode_wav, encode_wav, logmel_pickle_bytes
from clavs.data.categories import S4_CATEGORIES
from clavs.data.synth.audio import SAMPLE_RATE
from clavs.data.synth.identities import CATEGORY_GROUPS, benchmark_identities
from clavs.data.synth.render import DOMAINS, SynthClip, render_clip
from clavs.utils.io import atomic_write_json, atomic_write_text, sha256_file
from clavs.utils.locks import file_lock

__all__ = ["SYNTHAVS_VERSION", "SPLITS", "SynthPreset", "PRESETS", "generate", "VideoPlan", "plan_videos",
           "render_video", "s4_video_name", "ms3_video_name"]

SYNTHAVS_VERSION = "1"
SPLITS = ("train", "val", "test")
MANIFEST = "synthavs.json"
S4_DIR, MS3_DIR = "Single-source", "Multi-sources"
N_FRAMES, IMAGE_SIZE, DURATION = 5, 224, 5.0
_SUBSET_CODE = {"s4": 4, "ms3": 3}
_SPLIT_CODE = {split: i for i, split in enumerate(SPLITS)}


@dataclass(frozen=True)
class SynthPreset:
    """Sizes of a SynthAVS build: S4 clips per category per split, MS3 clips per split, and the
    number of silent distractors / sounding sources per clip (inclusive ranges)."""

    s4_train: int
    s4_val: int
    s4_test: int
    ms3_train: int
    ms3_val: int
    ms3_test: int
    s4_distractors: tuple[int, int] = (1, 3)
    ms3_sources: tuple[int, int] = (2, 3)
    ms3_distractors: tuple[int, int] = (1, 2)
    ms3_same_group: float = 0.7  # probability that each extra MS3 source shares the first one's group

    def s4_count(self, split: str) -> int:
        return {"train": self.s4_train, "val": self.s4_val, "test": self.s4_test}[split]

    def ms3_count(self, split: str) -> int:
        return {"train": self.ms3_train, "val": self.ms3_val, "test": self.ms3_test}[split]


PRESETS: dict[str, SynthPreset] = {
    # a few seconds: for tests and for checking that a pipeline runs at all
    "smoke": SynthPreset(s4_train=2, s4_val=1, s4_test=1, ms3_train=6, ms3_val=3, ms3_test=3),
    # the embedded default benchmark (about a minute on 2 cores)
    "default": SynthPreset(s4_train=30, s4_val=8, s4_test=10, ms3_train=300, ms3_val=64, ms3_test=64),
}


def s4_video_name(label: int, split: str, index: int) -> str:
    return f"s4_{split}_{label:02d}_{index:03d}"


def ms3_video_name(split: str, index: int) -> str:
    return f"ms3_{split}_{index:04d}"


@dataclass(frozen=True)
class VideoPlan:
    """One video to render (a row of a metadata CSV before its domain is drawn)."""

    subset: str                 # 's4' | 'ms3'
    split: str
    index: int                  # position in the subset's split, seeds the video's generator
    name: str
    sources: tuple[str, ...]    # categories of the sounding objects
    n_distractors: tuple[int, int]
    seed: int


# ------------------------------------------------------------------------------------- planning
def plan_videos(preset: SynthPreset, seed: int) -> tuple[list[VideoPlan], list[VideoPlan]]:
    """Every video to render, in CSV order. MS3 sources are drawn here so primaries are balanced."""
    s4: list[VideoPlan] = []
    for split in SPLITS:
        index = 0
        for label, category in enumerate(S4_CATEGORIES):
            for i in range(preset.s4_count(split)):
                s4.append(VideoPlan("s4", split, index, s4_video_name(label, split, i), (category,),
                               preset.s4_distractors, seed))
                index += 1
    group_of = {c: g for g, members in CATEGORY_GROUPS.items() for c in members}
    ms3: list[VideoPlan] = []
    for split in SPLITS:
        rng = np.random.default_rng([seed, _SUBSET_CODE["ms3"], _SPLIT_CODE[split], 1_000_003])
        n = preset.ms3_count(split)
        primaries = [S4_CATEGORIES[i % len(S4_CATEGORIES)] for i in rng.permutation(n)]
        for index, first in enumerate(primaries):
            k = int(rng.integers(preset.ms3_sources[0], preset.ms3_sources[1] + 1))
            sources = [first]
            while len(sources) < k:
                same = [c for c in CATEGORY_GROUPS[group_of[first]] if c not in sources]
                pool = same if same and rng.uniform() < preset.ms3_same_group else \
                    [c for c in S4_CATEGORIES if c not in sources]
                sources.append(pool[int(rng.integers(len(pool)))])
            ms3.append(VideoPlan("ms3", split, index, ms3_video_name(split, index), tuple(sources),
                            preset.ms3_distractors, seed))
    return s4, ms3


# ------------------------------------------------------------------------------------ rendering
def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buf = io.BytesIO()
    # fixed settings, no metadata chunks: identical arrays give identical bytes
    Image.fromarray(array, mode=mode).save(buf, format="PNG", compress_level=3, optimize=False)
    return buf.getvalue()


def _write_file(path: Path, data: bytes) -> None:
    """Temporary file + rename, without fsync: a killed build never leaves a torn file, and the build
    only counts as complete once the CSVs and manifest (written last, with fsync) exist."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def render_video(job: VideoPlan) -> SynthClip:
    """Render the clip of one planned video (deterministic in the plan's seed, subset, split, index)."""
    rng = np.random.default_rng([job.seed, _SUBSET_CODE[job.subset], _SPLIT_CODE[job.split], job.index])
    idents = benchmark_identities()
    others = [c for c in S4_CATEGORIES if c not in job.sources]
    n_silent = int(rng.integers(job.n_distractors[0], job.n_distractors[1] + 1))
    silent = [idents[others[i]] for i in rng.choice(len(others), size=n_silent, replace=False)]
    domain = DOMAINS[sorted(DOMAINS)[int(rng.integers(len(DOMAINS)))]]
    return render_clip([idents[c] for c in job.sources], silent, rng, domain, N_FRAMES, IMAGE_SIZE, DURATION)


def _render_job(job: VideoPlan, root: Path) -> str:
    """Render one video and write its frames, masks, wav and log-mel pickle. Returns its domain."""
    clip = render_video(job)
    if job.subset == "s4":
        base = root / S4_DIR / "s4_data"
        category = job.sources[0]
        frame_dir = base / "visual_frames" / job.split / category / job.name
        mask_dir = base / "gt_masks" / job.split / category / job.name
        wav_path = base / "audio_wav" / job.split / category / f"{job.name}.wav"
        pkl_path = base / "audio_log_mel" / job.split / category / f"{job.name}.pkl"
        frame_file = "{name}_{k}.png"
        n_masks = 1 if job.split == "train" else N_FRAMES
    else:
        base = root / MS3_DIR / "ms3_data"
        frame_dir = base / "visual_frames" / job.name
        mask_dir = base / "gt_masks" / job.split / job.name
        wav_path = base / "audio_wav" / job.split / f"{job.name}.wav"
        pkl_path = base / "audio_log_mel" / job.split / f"{job.name}.pkl"
        frame_file = "{name}.mp4_{k}.png"
        n_masks = N_FRAMES
    for k in range(1, N_FRAMES + 1):
        _write_file(frame_dir / frame_file.format(name=job.name, k=k), _png_bytes(clip.frames[k - 1], "RGB"))
    for k in range(1, n_masks + 1):
        mask = np.where(clip.masks[k - 1], 255, 0).astype(np.uint8)
        _write_file(mask_dir / f"{job.name}_{k}.png", _png_bytes(mask, "L"))
    wav = encode_wav(clip.waveform, SAMPLE_RATE, str(wav_path))
    _write_file(wav_path, wav)
    # the log-mel is computed from the 16-bit wav as written, as AVSBench's preprocess does
    wave, sr = decode_wav(wav, str(wav_path))
    _write_file(pkl_path, logmel_pickle_bytes(avsbench_logmel(wave, sr)))
    return clip.factors.domain


_THREAD_LIMIT = None


def _worker_init() -> None:
    """One BLAS thread per worker process: the pool already uses every core, and two-thread BLAS
    calls on tiny matrices only add contention. threadpoolctl is optional (it ships with scikit-learn).
    Ctrl-C is left to the parent, which stops the pool (no traceback from every worker)."""
    global _THREAD_LIMIT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _THREAD_LIMIT = threadpool_limits(1)


def _render_job_star(args: tuple[VideoPlan, Path]) -> tuple[str, str]:
    job, root = args
    return job.name, _render_job(job, root)


# ------------------------------------------------------------------------------------- metadata
def _csv_text(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def _manifest(preset_name: str, preset: SynthPreset, seed: int, complete: bool) -> dict:
    return {
        "generator": "clavs SynthAVS", "version": SYNTHAVS_VERSION, "preset": preset_name,
        "preset_fields": asdict(preset), "seed": seed, "complete": complete,
        "counts": {"s4": {s: preset.s4_count(s) * len(S4_CATEGORIES) for s in SPLITS},
                   "ms3": {s: preset.ms3_count(s) for s in SPLITS}},
        "categories": list(S4_CATEGORIES), "domains": sorted(DOMAINS),
    }


def _prepare_root(root: Path, wanted: dict, overwrite: bool) -> bool:
    """Return True when a complete identical build is already there; clear stale builds."""
    manifest_path = root / MANIFEST
    ours = [root / S4_DIR, root / MS3_DIR]
    if manifest_path.is_file():
        try:
            found = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"unreadable SynthAVS manifest {manifest_path}: {exc}") from exc
        keys = ("version", "preset_fields", "seed")
        # compare through JSON so tuples and lists match
        same = {k: found.get(k) for k in keys} == json.loads(json.dumps({k: wanted[k] for k in keys}))
        if same and found.get("complete") and not overwrite:
            return True
        if found.get("complete") and not same and not overwrite:
            raise FileExistsError(
                f"{manifest_path} describes another SynthAVS build (preset {found.get('preset')!r}, seed "
                f"{found.get('seed')}); pass overwrite=True (--overwrite) or choose another folder")
    elif any(p.exists() for p in ours):
        raise FileExistsError(f"{root} already holds {S4_DIR}/ or {MS3_DIR}/ but no {MANIFEST}: it is not a "
                              f"SynthAVS build (AVSBench itself?); refusing to write into it")
    for p in ours:  # an interrupted, different, or overwritten SynthAVS build
        if p.exists():
            shutil.rmtree(p)
    return False


# --------------------------------------------------------------------------------------- driver
def generate(out_root: str | os.PathLike, preset: str | SynthPreset = "default", seed: int = 0,
             workers: int | None = None, progress: bool = True, overwrite: bool = False) -> Path:
    """Write a SynthAVS dataset under `out_root` in the AVSBench layout and return `out_root`.

    preset: a key of PRESETS, or a SynthPreset of your own (recorded as "custom").
    seed: the dataset seed (same seed -> byte-identical tree).
    workers: processes (default os.cpu_count(); 1 renders in this process).
    A complete build with the same preset fields and seed is reused as is; a complete build of other
    settings raises FileExistsError unless overwrite=True; an interrupted build is redone.
    The CSVs and the final manifest (complete=true) are written last, atomically.
    """
    if isinstance(preset, SynthPreset):
        cfg, preset = preset, "custom"
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise ValueError(f"unknown SynthAVS preset {preset!r}; choose one of {sorted(PRESETS)}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"SynthAVS seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    root = Path(out_root)
    final_manifest = _manifest(preset, cfg, seed, complete=True)
    if not overwrite and _intact_build(root, final_manifest) == "intact":
        return root
    # One build per folder at a time: a second process waits, then finds the build complete.
    with file_lock(root.parent / f".{root.name}.synthavs.lock", f"the SynthAVS build in {root}"):
        state = _intact_build(root, final_manifest)
        if state == "intact" and not overwrite:
            return root
        if state not in ("intact", "other"):  # damaged: never trusted, rebuilt
            print(f"note: the SynthAVS build in {root} is damaged ({state}); building it again", file=sys.stderr,
                  flush=True)
        return _generate(root, preset, cfg, seed, final_manifest, workers, progress,
                         overwrite or state not in ("intact", "other"))


def _generate(root: Path, preset: str, cfg: SynthPreset, seed: int, final_manifest: dict, workers: int | None,
              progress: bool, overwrite: bool) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if _prepare_root(root, final_manifest, overwrite):
        return root
    atomic_write_json(root / MANIFEST, _manifest(preset, cfg, seed, complete=False))

    s4_jobs, ms3_jobs = plan_videos(cfg, seed)
    jobs = s4_jobs + ms3_jobs
    workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    domains: dict[str, str] = {}
    args = [(job, root) for job in jobs]

    def consume(results) -> None:
        if progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
            with Progress(TextColumn("SynthAVS"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
                task = bar.add_task("render", total=len(jobs))
                for name, domain in results:
                    domains[name] = domain
                    bar.advance(task)
        else:
            domains.update(results)

    if workers == 1:
        consume(map(_render_job_star, args))
    else:
        with mp.get_context().Pool(workers, initializer=_worker_init) as pool:
            consume(pool.imap_unordered(_render_job_star, args, chunksize=4))

    s4_rows = [[j.name, "0", j.sources[0], j.split, domains[j.name]] for j in s4_jobs]
    ms3_rows = [[j.name, j.split, domains[j.name], "|".join(j.sources)] for j in ms3_jobs]
    atomic_write_text(root / S4_DIR / "s4_meta_data.csv",
                      _csv_text(["name", "start", "category", "split", "domain"], s4_rows))
    atomic_write_text(root / MS3_DIR / "ms3_meta_data.csv", _csv_text(["name", "split", "domain", "sources"], ms3_rows))
    atomic_write_json(root / MANIFEST, {**final_manifest, "files": _file_list(root)})
    return root


# ---------------------------------------------------------------------------------- verification
def _file_list(root: Path) -> dict[str, list]:
    """Every file of the build (relative path -> [size, sha256]), recorded in the final manifest."""
    out: dict[str, list] = {}
    for top in (S4_DIR, MS3_DIR):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not path.name.endswith(".tmp"):
                out[path.relative_to(root).as_posix()] = [path.stat().st_size, sha256_file(path)]
    return out


def verify_build(root: str | os.PathLike) -> str | None:
    """None if every file the manifest of a complete build lists is there, of its recorded size, and
    (if modified after the manifest was written) of its recorded sha256; else what is wrong.
    One stat per file; only files touched since the build are hashed."""
    root = Path(root)
    manifest_path = root / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        built_ns = manifest_path.stat().st_mtime_ns
    except (OSError, ValueError) as e:
        return f"{manifest_path} is unreadable ({e})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return f"{manifest_path} lists no files (written by an older clavs)"
    bad: list[str] = []
    for rel, record in files.items():
        path = root / rel
        try:
            st = path.stat()
        except OSError:
            bad.append(f"{rel} missing")
            continue
        if not isinstance(record, list) or len(record) != 2 or st.st_size != record[0]:
            bad.append(f"{rel} has {st.st_size} bytes, not {record[0] if isinstance(record, list) else '?'}")
        elif st.st_mtime_ns > built_ns and sha256_file(path) != record[1]:
            bad.append(f"{rel} was modified (sha256 differs)")
        if len(bad) >= 3:
            break
    return "; ".join(bad) if bad else None


def _intact_build(root: Path, wanted: dict) -> str:
    """'intact' (a complete build of these settings whose files verify), 'other' (no complete build of
    these settings), or what is damaged in a complete build of these settings."""
    try:
        found = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return "other"
    keys = ("version", "preset_fields", "seed")
    if not isinstance(found, dict) or not found.get("complete") or \
            {k: found.get(k) for k in keys} != json.loads(json.dumps({k: wanted[k] for k in keys})):
        return "other"
    return verify_build(root) or "intact"
