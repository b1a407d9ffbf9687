"""What determines the pretrained weights: :class:`PretrainSettings` (part of the cache key), the
:data:`DEFAULT` and :data:`FAST` settings, and :data:`VERSION` (bumped whenever the defaults or the
data/training code change what is learned)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Literal

# Bump whenever PretrainSettings' defaults or the data/training code change what is learned.
VERSION = "2"
KINDS = ("visual", "audio")
Kind = Literal["visual", "audio"]


@dataclass(frozen=True)
class PretrainSettings:
    """Everything that determines the pretrained weights (part of the cache key)."""

    seed: int = 0
    classes: int = 32                       # extra identities, shared by both encoders
    # visual
    visual_train_per_class: int = 50        # images whose first object is of the class
    visual_test_per_class: int = 10
    visual_max_objects: int = 3             # 1..max objects per image, distinct classes
    visual_epochs: int = 6
    visual_batch_size: int = 32
    visual_lr: float = 2e-3
    visual_weight_decay: float = 0.05
    dense_weight: float = 1.0               # weight of the per-patch class-share objective
    visual_zoom: tuple[float, float] = (1.0, 2.5)  # object radius x U(zoom) over SynthAVS's: from the
                                            # benchmark's small objects to object-centric close-ups
    render_size: int = 224                  # SynthAVS frame size; resized to the preset's 64
    # audio
    audio_train_per_class: int = 50
    audio_test_per_class: int = 10
    audio_max_sources: int = 2              # 1..max sounds per clip, distinct classes
    audio_epochs: int = 6
    audio_batch_size: int = 64
    audio_lr: float = 3e-3
    audio_weight_decay: float = 0.01
    audio_channels: tuple[int, ...] = (16, 32, 64, 128)
    audio_embed_dim: int = 128
    warmup_fraction: float = 0.1            # linear warm-up, then cosine decay to 0
    # torch threads while pretraining (restored after). Part of the key: the summation order, so the
    # weights' bits, depend on it. 1 gives the same weights on every machine and avoids the steep
    # slowdown of 2 OpenMP threads on a 2-core machine that is busy with anything else.
    threads: int = 1

    def __post_init__(self) -> None:
        positive = ("classes", "visual_train_per_class", "visual_test_per_class", "visual_max_objects",
                    "visual_epochs", "visual_batch_size", "render_size", "audio_train_per_class",
                    "audio_test_per_class", "audio_max_sources", "audio_epochs", "audio_batch_size",
                    "audio_embed_dim", "threads")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"PretrainSettings.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"PretrainSettings.seed must be a non-negative integer, got {self.seed!r}")
        for name in ("visual_lr", "audio_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"PretrainSettings.{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("visual_weight_decay", "audio_weight_decay", "dense_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"PretrainSettings.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"PretrainSettings.warmup_fraction must be in [0, 1), got {self.warmup_fraction!r}")
        if self.classes < 2:
            raise ValueError(f"PretrainSettings.classes must be >= 2, got {self.classes}")
        for name in ("visual_max_objects", "audio_max_sources"):
            if getattr(self, name) > self.classes:
                raise ValueError(f"PretrainSettings.{name}={getattr(self, name)} exceeds classes={self.classes}")
        if not (len(self.visual_zoom) == 2 and 0 < self.visual_zoom[0] <= self.visual_zoom[1]):
            raise ValueError(f"PretrainSettings.visual_zoom must be (low, high) with 0 < low <= high, "
                             f"got {self.visual_zoom!r}")
        if not self.audio_channels or any(not isinstance(c, int) or c <= 0 for c in self.audio_channels):
            raise ValueError(f"PretrainSettings.audio_channels must be positive integers, got {self.audio_channels!r}")

    def digest(self) -> str:
        """Short hash of the settings (names the cache folder of non-default settings)."""
        blob = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha1(f"{VERSION}|{blob}".encode()).hexdigest()[:10]


DEFAULT = PretrainSettings()
# Seconds instead of a minute: for tests and smoke runs (still clearly above chance).
FAST = PretrainSettings(classes=4, visual_train_per_class=48, visual_test_per_class=8, visual_max_objects=1,
                        visual_epochs=8, visual_batch_size=16, visual_lr=1e-3, visual_zoom=(1.5, 2.5),
                        render_size=64, audio_train_per_class=24, audio_test_per_class=8, audio_max_sources=1,
                        audio_epochs=8, audio_batch_size=16, audio_channels=(8, 16, 32), audio_embed_dim=32)
