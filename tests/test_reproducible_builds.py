"""Reproducible builds: the same seed gives a byte-identical SynthAVS tree and byte-identical
pretrained encoder weights, wherever they are written.

(Across machines the weights' bits can still differ with torch's CPU kernels: see
benchmarks/cpu_variation.py.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from clavs.data.synth import generate
from clavs.pretrain import FAST, KINDS, ensure_pretrained

# A few seconds for both encoders: two optimiser epochs of two steps each, so AdamW's state and the
# learning-rate schedule are part of what has to repeat.
TINY = replace(FAST, classes=2, visual_train_per_class=3, visual_test_per_class=2, visual_epochs=2,
               visual_batch_size=4, audio_train_per_class=3, audio_test_per_class=2, audio_epochs=2,
               audio_batch_size=4)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _differences(a: dict[str, bytes], b: dict[str, bytes]) -> list[str]:
    only = [f"only in one build: {k}" for k in sorted(a.keys() ^ b.keys())]
    return only + [f"bytes differ: {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def test_two_smoke_builds_of_synthavs_are_byte_identical_whatever_the_folder_and_workers(smoke_synthavs, tmp_path: Path):
    first = smoke_synthavs  # the session's build (conftest.py): default worker count
    second = generate(tmp_path / "two" / "elsewhere", preset="smoke", seed=0, workers=1, progress=False)
    a, b = _tree(first), _tree(second)
    suffixes = {Path(k).suffix for k in a}
    assert {".png", ".wav", ".pkl", ".csv", ".json"} <= suffixes, suffixes  # every kind of file is compared
    assert len(a) > 1000
    differences = _differences(a, b)
    assert not differences, f"{len(differences)} of {len(a)} files differ, e.g. {differences[:5]}"


def test_two_pretrainings_with_the_same_settings_give_byte_identical_weights(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch):
    paths, threads = [], torch.get_num_threads()
    try:
        for home, caller_seed, caller_threads in (("home_a", 1, 1), ("home_b", 2, 2)):
            monkeypatch.setenv("CLAVS_HOME", str(tmp_path / home))
            torch.manual_seed(caller_seed)  # the caller's RNG state and thread count must not matter
            torch.set_num_threads(caller_threads)
            paths.append({kind: ensure_pretrained(kind, progress=False, settings=TINY) for kind in KINDS})
    finally:
        torch.set_num_threads(threads)
    for kind in KINDS:
        first, second = paths[0][kind], paths[1][kind]
        assert first.parent.parent.parent == tmp_path / "home_a" and second.parent.parent.parent == tmp_path / "home_b"
        assert first.read_bytes() == second.read_bytes(), kind
        reports = [json.loads(p.with_suffix(".json").read_text()) for p in (first, second)]
        assert reports[0]["sha256"] == hashlib.sha256(second.read_bytes()).hexdigest()
        for report in reports:
            del report["wall_seconds"]  # everything else (settings, metrics, sha256, identities) repeats
        assert reports[0] == reports[1], kind
