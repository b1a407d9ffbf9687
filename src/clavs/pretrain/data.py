"""Synthetic pretraining data: the extra identities, images of 1-3 extra objects (with their
per-patch class shares) and 1 s audio clips of 1-2 extra sounds, both on SynthAVS domains.

Deterministic: every sample has its own numpy Generator seeded from (seed, kind, split, index).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from clavs.data.synth.audio import SAMPLE_RATE, mix_sources, synthesize_audio
from clavs.data.synth.identities import Identity, make_identities
from clavs.data.synth.render import DOMAINS, PlacedObject, make_background, render_frame, sample_domain_factors
from clavs.pretrain.settings import PretrainSettings

_KIND_CODE = {"visual": 1, "audio": 2}
_SPLIT_CODE = {"train": 0, "test": 1}


def pretraining_identities(settings: PretrainSettings) -> list[Identity]:
    """The extra identities both encoders are pretrained on (disjoint from the benchmark's 23)."""
    return make_identities(settings.classes, settings.seed, exclude_benchmark=True)


def _sample_rng(settings: PretrainSettings, kind: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([settings.seed, _KIND_CODE[kind], _SPLIT_CODE[split], index])


def _draw_classes(rng: np.random.Generator, first: int, n_classes: int, max_count: int) -> list[int]:
    """`first`, then 0..max_count-1 other distinct classes (the count drawn uniformly)."""
    count = int(rng.integers(1, max_count + 1))
    others = [c for c in range(n_classes) if c != first]
    return [first] + [others[i] for i in rng.choice(len(others), size=count - 1, replace=False)]


def _place(rng: np.random.Generator, radii: list[float], size: int) -> list[tuple[float, float]]:
    """Centres keeping objects inside the frame and overlapping at most a little (shrinking the
    allowed gap when a crowded draw fails), so every object stays clearly visible."""
    overlap = 0.8
    for attempt in range(200):
        if attempt and attempt % 50 == 0:
            overlap -= 0.15
        centres = [(float(rng.uniform(r, size - r)), float(rng.uniform(r, size - r))) for r in radii]
        if all(math.dist(centres[i], centres[j]) >= overlap * (radii[i] + radii[j])
               for i in range(len(radii)) for j in range(i)):
            return centres
    return centres  # pragma: no cover - only with absurd radii; objects then overlap more


@dataclass
class VisualData:
    """images uint8 [N, 3, S, S]; targets float [N, C] (multi-hot); patch_targets float [N, g, g, C+1]
    (share of each class, then background, in each patch of the g x g token grid)."""

    images: torch.Tensor
    targets: torch.Tensor
    patch_targets: torch.Tensor


def _render_image(idents: list[Identity], classes: list[int], rng: np.random.Generator, render_size: int,
                  image_size: int, grid: int, zoom: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """One image of the given classes on a random SynthAVS domain, and its per-patch class shares."""
    domain = DOMAINS[sorted(DOMAINS)[int(rng.integers(len(DOMAINS)))]]
    factors = sample_domain_factors(domain, rng)
    background = make_background(domain, rng, render_size)
    scale = render_size / 224.0 * rng.uniform(*zoom)  # domain radii are given at 224x224
    radii = [min(float(rng.uniform(*factors.radius)) * scale, 0.45 * render_size) for _ in classes]
    centres = _place(rng, radii, render_size)
    objects = [PlacedObject(idents[c].visual, cx, cy, r, float(rng.uniform(0, 2 * np.pi)),
                            (float(rng.uniform()), float(rng.uniform())),
                            tuple(float(j) for j in rng.uniform(0.93, 1.07, size=3)))
               for c, (cx, cy), r in zip(classes, centres, radii)]
    img, labels = render_frame(objects, background, factors.gain, factors.contrast, factors.cast)
    if render_size != image_size:  # as the AVSBench reader resizes the 224 PNGs
        img = np.asarray(Image.fromarray(img).resize((image_size, image_size), Image.Resampling.BILINEAR))
    n_classes = len(idents)
    cell = render_size // grid
    shares = np.zeros((grid, grid, n_classes + 1), dtype=np.float32)
    for j, c in enumerate(classes):
        shares[..., c] += (labels == j).reshape(grid, cell, grid, cell).mean(axis=(1, 3))
    shares[..., n_classes] = (labels < 0).reshape(grid, cell, grid, cell).mean(axis=(1, 3))
    return img, shares


def make_visual_data(settings: PretrainSettings, split: str, image_size: int, grid: int,
                     on_item: Callable[[], None] | None = None) -> VisualData:
    """Render the visual pretraining images of a split ('train' | 'test'), deterministic in settings.seed."""
    if settings.render_size % grid:
        raise ValueError(f"PretrainSettings.render_size={settings.render_size} must be a multiple of the "
                         f"encoder's token grid {grid}")
    idents = pretraining_identities(settings)
    per_class = settings.visual_train_per_class if split == "train" else settings.visual_test_per_class
    n, c = per_class * settings.classes, settings.classes
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    targets = np.zeros((n, c), dtype=np.float32)
    patches = np.empty((n, grid, grid, c + 1), dtype=np.float32)
    for i in range(n):
        rng = _sample_rng(settings, "visual", split, i)
        classes = _draw_classes(rng, i % c, c, settings.visual_max_objects)
        images[i], patches[i] = _render_image(idents, classes, rng, settings.render_size, image_size, grid,
                                                   settings.visual_zoom)
        targets[i, classes] = 1.0
        if on_item:
            on_item()
    return VisualData(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(targets),
                      torch.from_numpy(patches))


@dataclass
class AudioData:
    """waveforms float32 [N, 16000] (1 s at 16 kHz); targets float [N, C] (multi-hot)."""

    waveforms: torch.Tensor
    targets: torch.Tensor


def make_audio_data(settings: PretrainSettings, split: str,
                    on_item: Callable[[], None] | None = None) -> AudioData:
    """Synthesise the audio pretraining clips of a split: 1-`audio_max_sources` extra sounds mixed
    with a random domain's background noise at its SNR, peak-normalised like SynthAVS wavs."""
    idents = pretraining_identities(settings)
    per_class = settings.audio_train_per_class if split == "train" else settings.audio_test_per_class
    n, c = per_class * settings.classes, settings.classes
    waves = np.empty((n, SAMPLE_RATE), dtype=np.float32)
    targets = np.zeros((n, c), dtype=np.float32)
    for i in range(n):
        rng = _sample_rng(settings, "audio", split, i)
        classes = _draw_classes(rng, i % c, c, settings.audio_max_sources)
        domain = DOMAINS[sorted(DOMAINS)[int(rng.integers(len(DOMAINS)))]]
        sources = [synthesize_audio(idents[k].sound, rng, duration=1.0, sr=SAMPLE_RATE) for k in classes]
        waves[i] = mix_sources(sources, rng, float(rng.uniform(*domain.snr_db)), domain.noise_color,
                               peak=float(rng.uniform(0.4, 0.85)))
        targets[i, classes] = 1.0
        if on_item:
            on_item()
    return AudioData(torch.from_numpy(waves), torch.from_numpy(targets))
