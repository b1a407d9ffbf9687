"""The default tiny encoders' weights ship with the package (made by `clavs pretrain` under the pinned
x86-64 kernels): a first run copies them into the cache after checking their sha256, instead of
pretraining for minutes; damaged shipped files are never used; `-m slow` retrains and compares bits."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from clavs.pretrain import DEFAULT, KINDS, VERSION, ensure_pretrained, pretrained_path
from clavs.pretrain import cache as pretrain_cache
from clavs.pretrain import train as pretrain_train
from clavs.utils.kernels import kernel_tag

needs_shipped = pytest.mark.skipif(pretrain_cache.shipped_path("visual") is None,
                                   reason=f"no weights ship for the kernels {kernel_tag()!r} (only x86-64's avx2)")


def test_weights_ship_for_the_pinned_x86_kernels():
    folder = pretrain_cache.SHIPPED / f"v{VERSION}-avx2"
    for kind in KINDS:
        weights = folder / f"{kind}_tiny.pt"
        report = json.loads(weights.with_suffix(".json").read_text())
        assert report["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest(), kind
        assert report["settings"] == json.loads(json.dumps(dataclasses.asdict(DEFAULT))), kind
        assert report["version"] == VERSION and report["kind"] == kind


@pytest.fixture
def no_pretraining(monkeypatch):
    """Record any attempt to pretrain instead of spending minutes on it."""
    calls = []

    def refuse(settings, path, progress=True):
        calls.append(path)
        raise RuntimeError("pretraining was attempted")

    monkeypatch.setattr(pretrain_train, "pretrain_visual", refuse)
    monkeypatch.setattr(pretrain_train, "pretrain_audio", refuse)
    return calls


@needs_shipped
def test_first_use_copies_the_shipped_weights_without_pretraining(tmp_path, monkeypatch, no_pretraining):
    monkeypatch.setenv("CLAVS_HOME", str(tmp_path))
    for kind in KINDS:
        path = ensure_pretrained(kind, progress=False)
        assert path == pretrained_path(kind) and path.is_relative_to(tmp_path)
        assert path.read_bytes() == pretrain_cache.shipped_path(kind).read_bytes()
        assert json.loads(path.with_suffix(".json").read_text())["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert no_pretraining == []


@needs_shipped
def test_damaged_shipped_weights_are_not_used(tmp_path, monkeypatch, no_pretraining):
    shipped = tmp_path / "shipped"
    shutil.copytree(pretrain_cache.SHIPPED, shipped)
    weights = shipped / f"v{VERSION}-{kernel_tag()}" / "visual_tiny.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(pretrain_cache, "SHIPPED", shipped)
    monkeypatch.setenv("CLAVS_HOME", str(tmp_path / "home"))
    with pytest.warns(UserWarning, match="visual_tiny.pt: the shipped weights do not match"), \
            pytest.raises(RuntimeError, match="pretraining was attempted"):
        ensure_pretrained("visual", progress=False)
    assert len(no_pretraining) == 1 and not pretrained_path("visual").exists()


@needs_shipped
def test_force_pretrains_even_with_shipped_weights(tmp_path, monkeypatch, no_pretraining):
    monkeypatch.setenv("CLAVS_HOME", str(tmp_path))
    with pytest.raises(RuntimeError, match="pretraining was attempted"):
        ensure_pretrained("audio", force=True, progress=False)


@pytest.mark.slow
@needs_shipped
@pytest.mark.parametrize("kind", KINDS)
def test_pretraining_again_gives_the_shipped_bits(tmp_path: Path, monkeypatch, kind):
    """What `clavs pretrain --force` makes here is bit for bit what ships (about 2-4 minutes each)."""
    monkeypatch.setenv("CLAVS_HOME", str(tmp_path))
    path = ensure_pretrained(kind, force=True, progress=False)
    assert path.read_bytes() == pretrain_cache.shipped_path(kind).read_bytes()
