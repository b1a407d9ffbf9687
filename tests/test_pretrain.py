"""Tests for `clavs.pretrain`: cached, deterministic pretraining of the tiny encoders on extra classes."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from clavs import pretrain
from clavs.data.synth.identities import benchmark_identities
from clavs.models.encoders.audio_tiny import TinyAudioCNN
from clavs.models.encoders.visual import create_visual_encoder
from clavs.pretrain import (DEFAULT, FAST, VERSION, PretrainSettings, ensure_pretrained, make_audio_data,
                            make_visual_data, pretrain_audio, pretrain_visual, pretrained_path,
                            pretraining_identities, set_accuracy)

# Seconds or less: for caching and determinism, where learning does not matter.
MICRO = replace(FAST, classes=2, visual_train_per_class=3, visual_test_per_class=2, visual_epochs=1,
                visual_batch_size=4, audio_train_per_class=3, audio_test_per_class=2, audio_epochs=1,
                audio_batch_size=4)


@pytest.fixture(autouse=True)
def one_thread():
    """The oracles' forward passes run single-threaded too: 2 OpenMP threads on a busy 2-core box are
    many times slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAVS_HOME", str(tmp_path))
    return tmp_path


def _normalised(images: torch.Tensor) -> torch.Tensor:
    """The engine's own frame preparation (so pretraining and training see the same inputs)."""
    from clavs.batch import Batch

    n = images.shape[0]
    batch = Batch(frames=images[:, None], audio=torch.zeros(n, 1, 1), masks=torch.zeros(n, 1, 1, 1, 1, dtype=torch.uint8),
                  mask_valid=torch.ones(n, 1, dtype=torch.bool), class_index=torch.zeros(n, dtype=torch.long),
                  task_id=torch.zeros(n, dtype=torch.long), index=torch.arange(n))
    return batch.prepared().frames[:, 0]


def _nearest_centroid_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                               test_y: np.ndarray) -> float:
    from sklearn.neighbors import NearestCentroid
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = NearestCentroid().fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(test_x)) == test_y).mean())


# ------------------------------------------------------------------------------ real learning
def test_visual_pretraining_learns_and_loads_with_the_public_loader(home: Path):
    path = ensure_pretrained("visual", progress=False, settings=FAST)
    assert path == pretrained_path("visual", FAST) and path.is_file()
    assert path.parent.parent == home / "pretrained"
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["kind"] == "visual" and report["version"] == VERSION and report["settings"]["classes"] == 4
    assert report["metrics"]["heldout"]["k=1"] >= 0.6  # chance is 0.25

    # Independent check: the file loads through the public loader, and its pooled features separate
    # the held-out images of the pretraining classes better than the same architecture untrained.
    trained = create_visual_encoder("tiny", weights=path).eval()
    torch.manual_seed(FAST.seed)
    untrained = create_visual_encoder("tiny").eval()
    grid = trained.img_size // trained.token_reduction
    train = make_visual_data(FAST, "train", trained.img_size, grid)
    test = make_visual_data(FAST, "test", trained.img_size, grid)
    scores = {}
    with torch.no_grad():
        for name, enc in (("trained", trained), ("untrained", untrained)):
            fx = enc.forward_pooled(_normalised(train.images)).numpy()
            tx = enc.forward_pooled(_normalised(test.images)).numpy()
            scores[name] = _nearest_centroid_accuracy(fx, train.targets.argmax(1).numpy(), tx,
                                                      test.targets.argmax(1).numpy())
    assert scores["trained"] >= 0.6, scores
    assert scores["trained"] > scores["untrained"] + 0.1, scores


def test_audio_pretraining_learns_and_loads_with_the_public_loader(home: Path):
    path = ensure_pretrained("audio", progress=False, settings=FAST)
    model = TinyAudioCNN.from_checkpoint(path)
    assert model.num_classes == FAST.classes and model.embed_dim == FAST.audio_embed_dim
    raw = torch.load(path, weights_only=True)
    assert raw["pretrain_version"] == VERSION and raw["pretrain_seed"] == FAST.seed
    # Held-out accuracy of the loaded model, computed here with a plain argmax (chance 0.25).
    test = make_audio_data(FAST, "test")
    with torch.no_grad():
        pred = model(test.waveforms)["logits"].argmax(1)
    accuracy = float((pred == test.targets.argmax(1)).float().mean())
    assert accuracy >= 0.6
    report = json.loads(path.with_suffix(".json").read_text())
    assert report["metrics"]["heldout"]["all"] == pytest.approx(accuracy, abs=1e-6)
    assert report["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ cache behaviour
def test_second_call_returns_the_cache_without_retraining(home: Path, monkeypatch: pytest.MonkeyPatch):
    path = ensure_pretrained("audio", progress=False, settings=MICRO)
    stamp = path.stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(pretrain.train, "pretrain_audio", no_training)  # what ensure_pretrained calls
    assert ensure_pretrained("audio", progress=False, settings=MICRO) == path
    assert path.stat().st_mtime_ns == stamp
    monkeypatch.undo()
    monkeypatch.setenv("CLAVS_HOME", str(home))
    # force retrains (same settings, so the same bytes), an incomplete job (no json) is redone
    ensure_pretrained("audio", progress=False, settings=MICRO, force=True)
    assert path.stat().st_mtime_ns != stamp
    before = path.read_bytes()
    path.with_suffix(".json").unlink()
    ensure_pretrained("audio", progress=False, settings=MICRO)
    assert path.with_suffix(".json").is_file() and path.read_bytes() == before


def test_cache_paths(home: Path, monkeypatch: pytest.MonkeyPatch):
    from clavs.utils.kernels import PIN

    for key, value in PIN.items():  # the CPU kernels are part of the key (utils/kernels.py)
        monkeypatch.setenv(key, value)
    assert pretrained_path("visual") == home / "pretrained" / f"v{VERSION}-avx2" / "visual_tiny.pt"
    assert pretrained_path("audio") == home / "pretrained" / f"v{VERSION}-avx2" / "audio_tiny.pt"
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    assert pretrained_path("audio") == home / "pretrained" / f"v{VERSION}-native" / "audio_tiny.pt"
    monkeypatch.setenv("MKL_CBWR", PIN["MKL_CBWR"])
    other = pretrained_path("audio", MICRO)
    assert other.parent != pretrained_path("audio").parent and other.name == "audio_tiny.pt"
    assert pretrained_path("audio", replace(MICRO, seed=1)) != other


# ------------------------------------------------------------------------------ determinism
def test_same_settings_give_identical_weights(tmp_path: Path):
    for job in (pretrain_visual, pretrain_audio):
        a, b = tmp_path / f"a_{job.__name__}.pt", tmp_path / f"b_{job.__name__}.pt"
        torch.manual_seed(123)  # the caller's RNG state must not matter ...
        job(MICRO, a)
        torch.manual_seed(456)
        job(MICRO, b)
        assert a.read_bytes() == b.read_bytes(), job.__name__
        torch.manual_seed(123)
        job(replace(MICRO, seed=1), c := tmp_path / f"c_{job.__name__}.pt")
        assert a.read_bytes() != c.read_bytes(), job.__name__
    # ... and is left as it was (pretraining runs in a forked RNG), as is the thread count
    torch.manual_seed(123)
    expected = torch.get_rng_state()
    torch.set_num_threads(2)
    pretrain_audio(MICRO, tmp_path / "d.pt")
    assert torch.equal(torch.get_rng_state(), expected)
    assert torch.get_num_threads() == 2


def test_pretraining_data_is_deterministic_and_well_formed():
    grid = 8
    a, b = make_visual_data(MICRO, "train", 64, grid), make_visual_data(MICRO, "train", 64, grid)
    assert torch.equal(a.images, b.images) and torch.equal(a.patch_targets, b.patch_targets)
    assert a.images.dtype == torch.uint8 and a.images.shape == (6, 3, 64, 64)
    torch.testing.assert_close(a.patch_targets.sum(-1), torch.ones(6, grid, grid))
    assert not torch.equal(a.images[:4], make_visual_data(MICRO, "test", 64, grid).images)  # splits differ
    # every image's first object is of class index % classes; its pixels show up in the patch shares
    assert a.targets.argmax(1).tolist() == [0, 1, 0, 1, 0, 1]
    assert ((a.patch_targets[..., :-1].sum(dim=(1, 2)) > 0) == (a.targets > 0)).all()

    multi = replace(DEFAULT, classes=5, visual_train_per_class=6, audio_train_per_class=6, render_size=64)
    v = make_visual_data(multi, "train", 64, grid)
    counts = v.targets.sum(1)
    assert counts.min() >= 1 and counts.max() <= multi.visual_max_objects and counts.max() > 1
    s = make_audio_data(multi, "train")
    assert s.waveforms.shape == (30, 16000) and s.waveforms.dtype == torch.float32
    peaks = s.waveforms.abs().amax(1)
    assert (peaks >= 0.4 - 1e-5).all() and (peaks <= 0.85 + 1e-5).all()
    assert set(s.targets.sum(1).tolist()) == {1.0, 2.0}
    assert torch.equal(s.waveforms, make_audio_data(multi, "train").waveforms)


# ------------------------------------------------------------------------------ disjointness
def _differences(a: tuple, b: tuple) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            count += 1
    return count


def test_pretraining_identities_are_disjoint_from_the_benchmark():
    bench = benchmark_identities()
    for settings in (DEFAULT, FAST, replace(DEFAULT, seed=7, classes=40)):
        extra = pretraining_identities(settings)
        assert len(extra) == settings.classes
        assert not {i.name for i in extra} & set(bench)
        for e in extra:
            for b in bench.values():
                ev, bv = (e.visual.shape, e.visual.color, e.visual.texture, e.visual.accent), \
                         (b.visual.shape, b.visual.color, b.visual.texture, b.visual.accent)
                es, bs = (e.sound.f0_hz, e.sound.timbre, e.sound.rhythm, e.sound.contour), \
                         (b.sound.f0_hz, b.sound.timbre, b.sound.rhythm, b.sound.contour)
                assert _differences(ev, bv) >= 2 and _differences(es, bs) >= 2, (e, b)
        # the pretraining classes are distinct from each other too
        assert len({i.visual for i in extra}) == len(extra) and len({i.sound for i in extra}) == len(extra)


def test_report_lists_the_identities_trained_on(tmp_path: Path):
    report = pretrain_audio(MICRO, tmp_path / "a.pt")
    names = [i["name"] for i in report["identities"]]
    assert names == [i.name for i in pretraining_identities(MICRO)]
    assert set(report["wall_seconds"]) == {"data", "train", "total"}


# ------------------------------------------------------------------------------ metric and errors
def test_set_accuracy_matches_a_brute_force_oracle():
    rng = random.Random(0)
    n, c = 200, 7
    logits = torch.randn(n, c, generator=torch.Generator().manual_seed(0))
    targets = torch.zeros(n, c)
    for i in range(n):
        for j in rng.sample(range(c), rng.randint(1, 3)):
            targets[i, j] = 1
    exact, recall, by_k = [], [], {}
    for i in range(n):
        truth = {j for j in range(c) if targets[i, j] == 1}
        top = set(sorted(range(c), key=lambda j: -float(logits[i, j]))[:len(truth)])
        exact.append(top == truth)
        recall.append(len(top & truth) / len(truth))
        by_k.setdefault(len(truth), []).append(top == truth)
    got = set_accuracy(logits, targets)
    assert got["all"] == pytest.approx(np.mean(exact)) and got["recall_at_k"] == pytest.approx(np.mean(recall))
    for k, hits in by_k.items():
        assert got[f"k={k}"] == pytest.approx(np.mean(hits))
    perfect = set_accuracy(targets * 5.0, targets)
    assert perfect["all"] == 1.0 and perfect["recall_at_k"] == 1.0
    with pytest.raises(ValueError, match="must both be"):
        set_accuracy(logits, targets[:, :3])


def test_bad_input_is_named(home: Path):
    with pytest.raises(ValueError, match="'video'"):
        ensure_pretrained("video", progress=False)
    with pytest.raises(ValueError, match="classes"):
        PretrainSettings(classes=1)
    with pytest.raises(ValueError, match="visual_epochs"):
        PretrainSettings(visual_epochs=0)
    with pytest.raises(ValueError, match="visual_max_objects=3 exceeds classes=2"):
        PretrainSettings(classes=2)
    with pytest.raises(ValueError, match="visual_zoom"):
        PretrainSettings(visual_zoom=(2.0, 1.0))
    with pytest.raises(ValueError, match="render_size=60"):
        make_visual_data(replace(MICRO, render_size=60), "train", 64, 8)
    with pytest.raises(TypeError, match="progress"):
        ensure_pretrained("audio", progress="yes", settings=MICRO)


def test_progress_bars_on_a_live_rich_progress(home: Path):
    import io

    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=False)
    with Progress(console=console) as bar:
        path = ensure_pretrained("audio", progress=bar, settings=MICRO)
        assert path.is_file()
        assert not bar.tasks  # our bars are removed when done
    path.unlink()
    path.with_suffix(".json").unlink()
    assert ensure_pretrained("audio", progress=True, settings=MICRO).is_file()
