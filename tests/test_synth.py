"""Tests of the SynthAVS generator: exact AVSBench layout, determinism, and task difficulty."""

from __future__ import annotations

import csv
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from clavs.data import synth
from clavs.data.audio import avsbench_logmel, read_wav
from clavs.data.categories import S4_CATEGORIES
from clavs.data.synth.build import _manifest
from clavs.data.synth.identities import hamming
from clavs.data.synth.render import DOMAINS, PlacedObject, render_frame

SMOKE = synth.PRESETS["smoke"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


@pytest.fixture(scope="module")
def built(smoke_synthavs) -> Path:
    """The session's smoke build (seed 0; conftest.py): these tests only read it."""
    return smoke_synthavs


@pytest.fixture(scope="module")
def plans():
    return synth.plan_videos(SMOKE, 0)


# ------------------------------------------------------------------------------------- layout
def _expected_files(root: Path) -> set[str]:
    """Every path AVSBench's loaders and preprocess scripts would touch, derived from the CSVs."""
    expected = {"synthavs.json", "Single-source/s4_meta_data.csv", "Multi-sources/ms3_meta_data.csv"}
    _, s4 = _rows(root / "Single-source/s4_meta_data.csv")
    for name, _start, category, split, _domain in s4:
        d = "Single-source/s4_data"
        expected |= {f"{d}/visual_frames/{split}/{category}/{name}/{name}_{k}.png" for k in range(1, 6)}
        n_masks = 1 if split == "train" else 5
        expected |= {f"{d}/gt_masks/{split}/{category}/{name}/{name}_{k}.png" for k in range(1, n_masks + 1)}
        expected |= {f"{d}/audio_wav/{split}/{category}/{name}.wav", f"{d}/audio_log_mel/{split}/{category}/{name}.pkl"}
    _, ms3 = _rows(root / "Multi-sources/ms3_meta_data.csv")
    for name, split, _domain, _sources in ms3:
        d = "Multi-sources/ms3_data"
        expected |= {f"{d}/visual_frames/{name}/{name}.mp4_{k}.png" for k in range(1, 6)}
        expected |= {f"{d}/gt_masks/{split}/{name}/{name}_{k}.png" for k in range(1, 6)}
        expected |= {f"{d}/audio_wav/{split}/{name}.wav", f"{d}/audio_log_mel/{split}/{name}.pkl"}
    return expected


def test_tree_is_exactly_the_avsbench_layout(built):
    files = {str(p.relative_to(built)) for p in built.rglob("*") if p.is_file()}
    assert files == _expected_files(built)
    n_s4 = 23 * (SMOKE.s4_train + SMOKE.s4_val + SMOKE.s4_test)
    n_ms3 = SMOKE.ms3_train + SMOKE.ms3_val + SMOKE.ms3_test
    masks = 23 * SMOKE.s4_train + 5 * 23 * (SMOKE.s4_val + SMOKE.s4_test) + 5 * n_ms3
    assert len(files) == 3 + 5 * n_s4 + 5 * n_ms3 + masks + 2 * (n_s4 + n_ms3)


def test_s4_csv_columns_and_counts(built):
    header, rows = _rows(built / "Single-source/s4_meta_data.csv")
    assert header == ["name", "start", "category", "split", "domain"]
    per = Counter((r[2], r[3]) for r in rows)
    for category in S4_CATEGORIES:
        for split in synth.SPLITS:
            assert per[(category, split)] == SMOKE.s4_count(split)
    assert len({r[0] for r in rows}) == len(rows)
    assert all(float(r[1]) == 0.0 and r[4] in DOMAINS for r in rows)


def test_ms3_csv_columns_sources_and_counts(built):
    header, rows = _rows(built / "Multi-sources/ms3_meta_data.csv")
    assert header == ["name", "split", "domain", "sources"]
    assert Counter(r[1] for r in rows) == {s: SMOKE.ms3_count(s) for s in synth.SPLITS}
    for _name, _split, domain, sources in rows:
        cats = sources.split("|")
        assert 2 <= len(cats) <= 3 and len(set(cats)) == len(cats)
        assert set(cats) <= set(S4_CATEGORIES) and domain in DOMAINS


def test_manifest(built):
    manifest = json.loads((built / "synthavs.json").read_text())
    assert manifest["preset"] == "smoke" and manifest["seed"] == 0 and manifest["complete"] is True
    assert manifest["version"] == synth.SYNTHAVS_VERSION
    assert manifest["counts"]["s4"]["val"] == 23 * SMOKE.s4_val
    assert manifest["counts"]["ms3"]["train"] == SMOKE.ms3_train


def test_frames_masks_wavs_and_pickles_have_avsbench_formats(built):
    for png in built.rglob("visual_frames/**/*.png"):
        with Image.open(png) as im:
            assert im.mode == "RGB" and im.size == (224, 224), png
    for png in built.rglob("gt_masks/**/*.png"):
        with Image.open(png) as im:
            assert im.mode == "L" and im.size == (224, 224), png
            values = set(np.unique(np.asarray(im)).tolist())
        assert values == {0, 255}, png  # binary, and the sounding object is always visible
    wavs = sorted(built.rglob("*.wav"))
    for wav in wavs:
        info = sf.info(str(wav))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 80000, "PCM_16"), wav
    for wav in wavs[::10]:
        pkl = Path(str(wav).replace("audio_wav", "audio_log_mel")).with_suffix(".pkl")
        with open(pkl, "rb") as f:
            tensor = pickle.load(f)
        assert isinstance(tensor, torch.Tensor) and tensor.requires_grad and tensor.dtype == torch.float32
        assert tuple(tensor.shape) == (5, 1, 96, 64)
        wave, sr = read_wav(wav)
        assert torch.equal(tensor.detach(), avsbench_logmel(wave, sr))  # computed from the wav as written


# -------------------------------------------------------------------------------- determinism
def test_different_seed_differs(tmp_path):
    few = synth.SynthPreset(s4_train=1, s4_val=0, s4_test=0, ms3_train=2, ms3_val=0, ms3_test=0)  # every category once
    a, b = (_tree(synth.generate(tmp_path / f"seed{seed}", preset=few, seed=seed, workers=2, progress=False))
            for seed in (0, 1))
    assert a.keys() == b.keys()  # same names and layout
    frames = [k for k in a if k.endswith(".png") and "visual_frames" in k]
    assert sum(a[k] != b[k] for k in frames) == len(frames)
    assert a["Multi-sources/ms3_meta_data.csv"] != b["Multi-sources/ms3_meta_data.csv"]


def test_existing_build_is_reused_and_conflicts_are_refused(built, tmp_path):
    csv_path = built / "Single-source/s4_meta_data.csv"
    before = csv_path.stat().st_mtime_ns
    assert synth.generate(built, preset="smoke", seed=0, workers=1, progress=False) == built
    assert csv_path.stat().st_mtime_ns == before
    with pytest.raises(FileExistsError, match="synthavs.json"):
        synth.generate(built, preset="smoke", seed=3, workers=1, progress=False)
    foreign = tmp_path / "avsbench"
    (foreign / "Single-source").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="not a SynthAVS build"):
        synth.generate(foreign, preset="smoke", seed=0, progress=False)
    with pytest.raises(ValueError, match="unknown SynthAVS preset 'huge'"):
        synth.generate(tmp_path / "x", preset="huge")


def test_interrupted_build_is_redone(tmp_path):
    tiny = synth.SynthPreset(s4_train=1, s4_val=0, s4_test=0, ms3_train=1, ms3_val=0, ms3_test=0)
    root = tmp_path / "partial"
    manifest = _manifest("custom", tiny, 0, complete=False)
    (root / "Single-source/s4_data").mkdir(parents=True)
    (root / "Single-source/s4_data/stale.txt").write_text("left by a killed build")
    (root / "synthavs.json").write_text(json.dumps(manifest))
    synth.generate(root, preset=tiny, seed=0, workers=2, progress=False)
    assert not (root / "Single-source/s4_data/stale.txt").exists()
    assert json.loads((root / "synthavs.json").read_text())["complete"] is True


# ------------------------------------------------------------------- scene content and difficulty
def test_files_match_rendered_clips_and_every_frame_has_a_visible_silent_distractor(built, plans):
    s4, ms3 = plans
    mask_share = []
    for job in s4:
        clip = synth.render_video(job)
        category, name = job.sources[0], job.name
        frame_dir = built / "Single-source/s4_data/visual_frames" / job.split / category / name
        mask_dir = built / "Single-source/s4_data/gt_masks" / job.split / category / name
        assert clip.object_names[0] == category and category not in clip.object_names[1:]
        assert 1 <= len(clip.object_names) - 1 <= 3
        for k in range(5):
            np.testing.assert_array_equal(np.asarray(Image.open(frame_dir / f"{name}_{k + 1}.png")), clip.frames[k])
            mask_file = mask_dir / f"{name}_{k + 1}.png"
            if mask_file.exists():
                np.testing.assert_array_equal(np.asarray(Image.open(mask_file)) == 255, clip.masks[k])
            # the mask is exactly the visible pixels of the sounding object
            np.testing.assert_array_equal(clip.masks[k], clip.labels[k] == 0)
            silent_outside = [((clip.labels[k] == j) & ~clip.masks[k]).sum() for j in range(1, len(clip.object_names))]
            assert max(silent_outside) >= 30, (name, k)
            objects = (clip.labels[k] >= 0).sum()
            mask_share.append(clip.masks[k].sum() / objects)
    # without audio the target cannot be told apart: it is a minority of the object pixels
    assert max(mask_share) < 1.0 and np.mean(mask_share) < 0.5
    for job in ms3:
        clip = synth.render_video(job)
        n_src = len(job.sources)
        assert clip.n_sounding == n_src and clip.object_names[:n_src] == job.sources
        assert 1 <= len(clip.object_names) - n_src <= 2
        for k in range(5):
            for j in range(len(clip.object_names)):
                assert (clip.labels[k] == j).sum() > 0, (job.name, k, j)
            np.testing.assert_array_equal(clip.masks[k], (clip.labels[k] >= 0) & (clip.labels[k] < n_src))
        mask = np.asarray(Image.open(built / "Multi-sources/ms3_data/gt_masks" / job.split / job.name / f"{job.name}_3.png"))
        np.testing.assert_array_equal(mask == 255, clip.masks[2])


def test_objects_move_smoothly(plans):
    clip = synth.render_video(plans[0][0])
    centres = []
    for k in range(5):
        ys, xs = np.nonzero(clip.labels[k] == 0)
        centres.append((xs.mean(), ys.mean()))
    steps = np.hypot(*np.diff(np.array(centres), axis=0).T)
    assert steps.max() < 25.0 and steps.sum() > 2.0  # moves, without jumps


def _audio_features(root: Path, rows: list[list[str]]) -> np.ndarray:
    feats = []
    for name, _start, category, split, _domain in rows:
        with open(root / "Single-source/s4_data/audio_log_mel" / split / category / f"{name}.pkl", "rb") as f:
            x = pickle.load(f).detach().numpy().reshape(-1, 64)
        loud = np.sort(x, axis=0)[-int(0.2 * len(x)):].mean(axis=0)  # spectrum of the loudest 20 % of frames
        feats.append(loud - loud.mean())  # remove the clip's overall level
    return np.array(feats)


def test_categories_are_distinguishable_by_their_sound(built):
    _, rows = _rows(built / "Single-source/s4_meta_data.csv")
    train = [r for r in rows if r[3] == "train"]
    held = [r for r in rows if r[3] != "train"]
    xtr, xte = _audio_features(built, train), _audio_features(built, held)
    ytr = np.array([S4_CATEGORIES.index(r[2]) for r in train])
    yte = np.array([S4_CATEGORIES.index(r[2]) for r in held])
    centroids = np.stack([xtr[ytr == c].mean(axis=0) for c in range(23)])
    pred = np.argmin(((xte[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yte).mean() >= 0.6  # chance is 1/23; noisy domains make some clips hard


def test_clean_sounds_are_separable():
    rng = np.random.default_rng(0)
    feats, labels = [], []
    for label, ident in enumerate(synth.benchmark_identities().values()):
        for _ in range(3):
            x = avsbench_logmel(0.3 * synth.synthesize_audio(ident.sound, rng)).numpy().reshape(-1, 64)
            m, s = x.mean(axis=0), x.std(axis=0)
            feats.append(np.concatenate([m - m.mean(), s]))
            labels.append(label)
    feats, labels = np.array(feats), np.array(labels)
    correct = 0
    for i in range(len(labels)):  # leave-one-out nearest centroid
        keep = np.arange(len(labels)) != i
        cents = np.stack([feats[keep & (labels == c)].mean(axis=0) for c in range(23)])
        correct += int(np.argmin(((cents - feats[i]) ** 2).sum(-1)) == labels[i])
    assert correct / len(labels) >= 0.9


# ------------------------------------------------------------------------------- identities
def test_benchmark_identities_are_distinct_but_share_attributes():
    idents = list(synth.benchmark_identities().values())
    assert [i.name for i in idents] == list(S4_CATEGORIES)
    for a in range(23):
        for b in range(a + 1, 23):
            assert hamming(idents[a].visual.attributes(), idents[b].visual.attributes()) >= 2
            assert hamming(idents[a].sound.attributes(), idents[b].sound.attributes()) >= 2
    # confusable: no colour, shape or pitch belongs to a single category
    for field in ("color", "shape"):
        assert min(Counter(getattr(i.visual, field) for i in idents).values()) >= 2
    assert min(Counter(i.sound.f0_hz for i in idents).values()) >= 2


def test_extra_identities_are_disjoint_from_the_benchmark_and_deterministic():
    extra = synth.make_identities(40, seed=5)
    assert extra == synth.make_identities(40, seed=5) and extra != synth.make_identities(40, seed=6)
    bench = synth.benchmark_identities().values()
    for e in extra:
        for b in bench:
            assert hamming(e.visual.attributes(), b.visual.attributes()) >= 2
            assert hamming(e.sound.attributes(), b.sound.attributes()) >= 2
    assert len({e.visual for e in extra}) == 40 and len({e.sound for e in extra}) == 40
    # extra identities render and sound like any other
    rng = np.random.default_rng(0)
    clip = synth.render_clip(extra[:2], extra[2:4], rng, domain="city", size=96)
    assert clip.frames.shape == (5, 96, 96, 3) and clip.masks.any(axis=(1, 2)).all()
    assert clip.waveform.shape == (80000,) and np.abs(clip.waveform).max() <= 1.0
    with pytest.raises(ValueError, match="unknown domain 'mars'"):
        synth.render_clip(extra[:1], [], rng, domain="mars")


def test_render_frame_draws_in_order_with_exact_labels():
    ident = synth.benchmark_identities()
    circle = next(i for i in ident.values() if i.visual.shape == "circle").visual
    square = next(i for i in ident.values() if i.visual.shape == "square").visual
    bg = np.full((64, 64, 3), 0.5)
    img, labels = render_frame([PlacedObject(circle, 32.0, 32.0, 20.0), PlacedObject(square, 40.0, 40.0, 8.0)], bg)
    assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
    assert labels[32, 32] == 0 and labels[40, 40] == 1 and labels[2, 2] == -1
    np.testing.assert_array_equal(img[2, 2], [128, 128, 128])  # untouched background
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    inside = np.hypot(xx - 32.0, yy - 32.0) <= 0.92 * 20.0
    np.testing.assert_array_equal((labels >= 0) & ~((xx > 34) & (xx < 46) & (yy > 34) & (yy < 46)),
                                  inside & ~((xx > 34) & (xx < 46) & (yy > 34) & (yy < 46)))


def test_custom_preset_and_bad_arguments(tmp_path):
    tiny = synth.SynthPreset(s4_train=1, s4_val=0, s4_test=0, ms3_train=2, ms3_val=0, ms3_test=0)
    root = synth.generate(tmp_path / "tiny", preset=tiny, seed=7, workers=1, progress=False)
    _, s4 = _rows(root / "Single-source/s4_meta_data.csv")
    _, ms3 = _rows(root / "Multi-sources/ms3_meta_data.csv")
    assert len(s4) == 23 and {r[3] for r in s4} == {"train"} and len(ms3) == 2
    assert json.loads((root / "synthavs.json").read_text())["preset"] == "custom"
    with pytest.raises(ValueError, match="seed"):
        synth.generate(tmp_path / "neg", preset="smoke", seed=-1)
    with pytest.raises(ValueError, match="workers"):
        synth.generate(tmp_path / "w", preset=tiny, seed=0, workers=0, progress=False)
