"""Pretraining of the tiny encoders on synthetic classes disjoint from the 23 benchmark categories.

The paper's methods (LoRA, L2P, RanPAC, FeCAM, ATLAS) start from pretrained encoders. The embedded
default has no hub weights, so `ensure_pretrained` trains the tiny ViT and the tiny audio CNN once on
extra SynthAVS identities (`make_identities`, which differ from every benchmark category in at least
two visual and two sound attributes) and caches the result under
``cache_home()/pretrained/v<VERSION>/``:

- ``visual_tiny.pt``: the ViT backbone in timm's key layout (``create_visual_encoder('tiny', weights=path)``);
- ``audio_tiny.pt``: a :class:`TinyAudioCNN` checkpoint (``TinyAudioCNN.from_checkpoint(path)``);
- ``<kind>_tiny.json``: settings, identities, held-out accuracies, wall times, sha256 of the weights.
  It is written last, so it marks a complete job.

Visual task: 64x64 images (rendered at 224 like SynthAVS frames, then resized bilinearly as the
benchmark's reader does) of 1-3 extra objects on the SynthAVS domain backgrounds and lighting.
Objectives: multi-label classification on the pooled embedding (softmax cross-entropy against the
labels spread evenly, which learns far faster than sigmoids in a short job), plus a cheap dense one (each patch
token predicts the share of every class and of the background in its patch), so the tokens the
segmentation decoder reads already localise objects. Frames are ImageNet-normalised, as the engine
feeds them (`clavs.engine.clips.prepare_batch`: values in [0, 1]); the encoder applies its own mean/std.

Audio task: 1 s clips (16 kHz) mixing 1-2 extra sounds with a SynthAVS domain's coloured noise at the
domain's SNR, peak-normalised like the benchmark wavs; multi-label classification.

Deterministic: every sample has its own numpy Generator seeded from (seed, kind, split, index); the
torch RNG is seeded inside a forked RNG state (the caller's global torch RNG is left untouched), and
torch runs on `settings.threads` threads (1 by default), so the weights' bits do not depend on the
machine's core count. About 1.5 minutes on a 2-core CPU (visual ~50 s, audio ~30 s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clavs.data.synth_audio import SAMPLE_RATE, mix_sources, synthesize_audio
from clavs.data.synth_identities import Identity, make_identities
from clavs.data.synth_render import DOMAINS, PlacedObject, make_background, render_frame, sample_domain_factors
from clavs.utils.io import atomic_write_json

__all__ = ["VERSION", "PretrainSettings", "DEFAULT", "FAST", "KINDS", "ensure_pretrained", "pretrained_path",
           "pretrain_visual", "pretrain_audio", "pretraining_identities", "make_visual_data", "make_audio_data",
           "set_accuracy"]

# Bump whenever PretrainSettings' defaults or the data/training code change what is learned.
VERSION = "2"
KINDS = ("visual", "audio")
Kind = Literal["visual", "audio"]

_KIND_CODE = {"visual": 1, "audio": 2}
_SPLIT_CODE = {"train": 0, "test": 1}


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


# ------------------------------------------------------------------------------------------ paths
def pretrained_path(kind: Kind, settings: PretrainSettings = DEFAULT) -> Path:
    """Where `ensure_pretrained(kind, settings=settings)` keeps its weights (default settings:
    ``cache_home()/pretrained/v<VERSION>/<kind>_tiny.pt``; others get a folder named by their digest)."""
    from clavs.engine.clips import cache_home

    _check_kind(kind)
    folder = f"v{VERSION}" if settings == DEFAULT else f"v{VERSION}-{settings.digest()}"
    return cache_home() / "pretrained" / folder / f"{kind}_tiny.pt"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown encoder kind {kind!r} to pretrain; expected one of {KINDS}")


def _is_complete(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so that concurrent runs pretrain once and the others wait (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic renames still keep files whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_pretrained(kind: Kind, *, force: bool = False, progress: Any = True,
                      settings: PretrainSettings | None = None) -> Path:
    """Return the cached pretrained weights of the tiny `kind` encoder ('visual' | 'audio'),
    pretraining them first when absent (or when `force`).

    progress: True (own rich progress bars), False, or a live ``rich.progress.Progress`` to add bars to.
    settings: defaults to :data:`DEFAULT`. The weights file is written atomically, then its json
    (the completion marker); a lock file serialises concurrent callers.
    """
    _check_kind(kind)
    settings = DEFAULT if settings is None else settings
    path = pretrained_path(kind, settings)
    if _is_complete(path) and not force:
        return path
    with _file_lock(path.with_name(f".{kind}_tiny.lock")):
        if _is_complete(path) and not force:  # another process finished while we waited
            return path
        job = pretrain_visual if kind == "visual" else pretrain_audio
        job(settings, path, progress=progress)
    return path


# ------------------------------------------------------------------------------------ progress
class _Bars:
    """Minimal facade over rich progress (or nothing) so the jobs report without caring which."""

    def __init__(self, progress: Any):
        self.progress = progress

    def add(self, description: str, total: int) -> Any:
        return self.progress.add_task(description, total=total) if self.progress is not None else None

    def advance(self, task: Any, n: int = 1) -> None:
        if self.progress is not None:
            self.progress.advance(task, n)

    def done(self, task: Any) -> None:
        if self.progress is not None:
            self.progress.remove_task(task)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _bars(progress: Any) -> Iterator[_Bars]:
    if progress is True:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn()) as bar:
            yield _Bars(bar)
    elif progress is False or progress is None:
        yield _Bars(None)
    elif hasattr(progress, "add_task"):
        yield _Bars(progress)
    else:
        raise TypeError(f"progress must be True, False or a rich Progress, got {type(progress).__name__}")


# ---------------------------------------------------------------------------------------- data
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


# -------------------------------------------------------------------------------------- training
def set_accuracy(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """Share of samples whose k highest logits are exactly their k labels (k = number of labels),
    overall ('all') and per k ('k=1', 'k=2', ...), and 'recall_at_k', the mean share of a sample's
    labels among its k highest logits. With one label per sample both are top-1 accuracy."""
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must both be [N, C]")
    counts = targets.sum(dim=1).round().long()
    order = logits.argsort(dim=1, descending=True)
    ranked = torch.gather(targets, 1, order)  # label indicator of the classes by decreasing logit
    hits = torch.cumsum(ranked, dim=1)
    top_k_hits = torch.gather(hits, 1, (counts - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    correct = (top_k_hits.round().long() == counts) & (counts > 0)
    recall = top_k_hits / counts.clamp(min=1)
    out = {"all": float(correct.float().mean()), "recall_at_k": float(recall.mean())}
    for k in sorted(set(counts.tolist())):
        out[f"k={k}"] = float(correct[counts == k].float().mean())
    return out


def _multilabel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy against the labels spread evenly (k labels -> 1/k each): with few
    steps it learns far faster than per-class sigmoids, and top-k of the softmax recovers the set."""
    dist = targets / targets.sum(dim=1, keepdim=True)
    return -(dist * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _schedule(optimizer: torch.optim.Optimizer, total_steps: int,
              warmup_fraction: float) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = max(1, int(round(warmup_fraction * total_steps)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _normalise(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B,3,H,W] -> float in [0, 1], exactly as the engine prepares frames (the encoder normalises)."""
    return images.float() / 255.0


class _VisualPretrainer(nn.Module):
    """The tiny ViT with a multi-label head on its pooled embedding and a per-patch class-share head."""

    def __init__(self, n_classes: int):
        super().__init__()
        from clavs.models.encoders.visual import create_visual_encoder

        self.encoder = create_visual_encoder("tiny", weights=None)
        self.head = nn.Linear(self.encoder.pooled_dim, n_classes)
        self.dense_head = nn.Linear(self.encoder.token_dim, n_classes + 1)
        grid = self.encoder.model.patch_embed.grid_size
        if grid[0] != grid[1]:
            raise ValueError(f"non-square token grid {grid}")
        self.grid = int(grid[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vit = self.encoder.model
        tokens = vit.forward_features(self.encoder._prepare(x))  # normalised as VisualEncoder.forward does
        pooled = vit.forward_head(tokens, pre_logits=True)
        patches = tokens[:, vit.num_prefix_tokens:]
        dense = self.dense_head(patches).view(x.shape[0], self.grid, self.grid, -1)
        return self.head(pooled), dense


def _visual_eval(model: _VisualPretrainer, data: VisualData, batch: int = 256) -> dict[str, float]:
    model.eval()
    logits, dense = [], []
    with torch.no_grad():
        for s in range(0, data.images.shape[0], batch):
            lg, dn = model(_normalise(data.images[s:s + batch]))
            logits.append(lg)
            dense.append(dn)
    model.train()
    acc = set_accuracy(torch.cat(logits), data.targets)
    # Patches mostly show background; score the ones mostly covered by an object.
    patch_pred = torch.cat(dense).argmax(dim=-1)
    patch_true = data.patch_targets.argmax(dim=-1)
    objects = patch_true != data.patch_targets.shape[-1] - 1
    acc["object_patches"] = float((patch_pred == patch_true)[objects].float().mean())
    return acc


def _subset(data: Any, n: int) -> Any:
    return type(data)(**{f.name: getattr(data, f.name)[:n] for f in fields(data)})


def _fit(step: Callable[[torch.Tensor], torch.Tensor], params: list[nn.Parameter], n: int, epochs: int,
         batch_size: int, lr: float, weight_decay: float, warmup: float, seed: int, bars: _Bars,
         label: str) -> list[float]:
    """The shared loop: AdamW, warm-up + cosine, shuffled batches from a seeded generator.
    `step(indices)` returns the loss of a batch. Returns the mean loss of each epoch."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    scheduler = _schedule(optimizer, epochs * steps_per_epoch, warmup)
    gen = torch.Generator().manual_seed(seed)
    task = bars.add(label, epochs * steps_per_epoch)
    history = []
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for s in range(0, n, batch_size):
            loss = step(order[s:s + batch_size])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * min(batch_size, n - s)
            bars.advance(task)
        history.append(total / n)
    bars.done(task)
    return history


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _identity_record(idents: list[Identity]) -> list[dict[str, Any]]:
    return [{"name": i.name, "visual": asdict(i.visual), "sound": asdict(i.sound)} for i in idents]


def _write_report(path: Path, kind: str, settings: PretrainSettings, metrics: dict[str, Any],
                  timings: dict[str, float], extra: dict[str, Any]) -> None:
    atomic_write_json(path.with_suffix(".json"), {
        "kind": kind, "version": VERSION, "settings": asdict(settings), "settings_digest": settings.digest(),
        "metrics": metrics, "wall_seconds": {k: round(v, 3) for k, v in timings.items()},
        "torch": torch.__version__, "sha256": _sha256(path),
        "identities": _identity_record(pretraining_identities(settings)), **extra,
    })


def pretrain_visual(settings: PretrainSettings, path: str | os.PathLike, *, progress: Any = False) -> dict[str, Any]:
    """Pretrain the tiny ViT, write its backbone to `path` (loadable with
    ``create_visual_encoder('tiny', weights=path)``) and `path`.json; returns the json's content."""
    path = Path(path)
    start = time.perf_counter()
    with _bars(progress) as bars, torch.random.fork_rng(devices=[]), _torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        model = _VisualPretrainer(settings.classes)
        size, grid = model.encoder.img_size, model.grid
        data = {}
        for split in ("train", "test"):
            per = settings.visual_train_per_class if split == "train" else settings.visual_test_per_class
            task = bars.add(f"pretrain visual: render {split}", per * settings.classes)
            data[split] = make_visual_data(settings, split, size, grid, on_item=lambda: bars.advance(task))
            bars.done(task)
        t_data = time.perf_counter()
        train = data["train"]

        def step(idx: torch.Tensor) -> torch.Tensor:
            x, y, p = _normalise(train.images[idx]), train.targets[idx], train.patch_targets[idx]
            flip = torch.rand(len(idx)) < 0.5  # horizontal flips: shapes are rotated at random anyway
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            p = torch.where(flip.view(-1, 1, 1, 1), p.flip(2), p)
            logits, dense = model(x)
            loss = _multilabel_loss(logits, y)
            if settings.dense_weight:
                loss = loss + settings.dense_weight * -(p * F.log_softmax(dense, dim=-1)).sum(-1).mean()
            return loss

        losses = _fit(step, list(model.parameters()), train.images.shape[0], settings.visual_epochs,
                      settings.visual_batch_size, settings.visual_lr, settings.visual_weight_decay,
                      settings.warmup_fraction, settings.seed, bars, "pretrain visual: train")
        t_train = time.perf_counter()
        metrics = {"train": _visual_eval(model, _subset(train, 1024)), "heldout": _visual_eval(model, data["test"]),
                   "loss_per_epoch": [round(v, 5) for v in losses], "chance_top1": 1.0 / settings.classes}
        model.encoder.save_backbone(path)
    end = time.perf_counter()
    report = {"encoder": "tiny ViT (VISUAL_PRESETS['tiny'])",
              "input": "frames in [0, 1]; the encoder normalises",
              "images": {"train": int(train.images.shape[0]), "heldout": int(data["test"].images.shape[0])}}
    _write_report(path, "visual", settings, metrics,
                  {"data": t_data - start, "train": t_train - t_data, "total": end - start}, report)
    return json.loads(path.with_suffix(".json").read_text())


def pretrain_audio(settings: PretrainSettings, path: str | os.PathLike, *, progress: Any = False) -> dict[str, Any]:
    """Pretrain a TinyAudioCNN (with its classification head), save it to `path` (loadable with
    ``TinyAudioCNN.from_checkpoint(path)``) and `path`.json; returns the json's content."""
    from clavs.models.encoders.audio_tiny import TinyAudioCNN

    path = Path(path)
    start = time.perf_counter()
    with _bars(progress) as bars, torch.random.fork_rng(devices=[]), _torch_threads(settings.threads):
        torch.manual_seed(settings.seed)
        model = TinyAudioCNN(embed_dim=settings.audio_embed_dim, channels=settings.audio_channels,
                             num_classes=settings.classes)
        data = {}
        for split in ("train", "test"):
            per = settings.audio_train_per_class if split == "train" else settings.audio_test_per_class
            task = bars.add(f"pretrain audio: synthesise {split}", per * settings.classes)
            data[split] = make_audio_data(settings, split, on_item=lambda: bars.advance(task))
            bars.done(task)
        t_data = time.perf_counter()
        train = data["train"]
        model.train()

        def step(idx: torch.Tensor) -> torch.Tensor:
            logits = model(train.waveforms[idx])["logits"]
            return _multilabel_loss(logits, train.targets[idx])

        losses = _fit(step, list(model.parameters()), train.waveforms.shape[0], settings.audio_epochs,
                      settings.audio_batch_size, settings.audio_lr, settings.audio_weight_decay,
                      settings.warmup_fraction, settings.seed, bars, "pretrain audio: train")
        t_train = time.perf_counter()

        def evaluate(d: AudioData) -> dict[str, float]:
            model.eval()
            with torch.no_grad():
                logits = torch.cat([model(d.waveforms[s:s + 256])["logits"] for s in range(0, len(d.waveforms), 256)])
            model.train()
            return set_accuracy(logits, d.targets)

        metrics = {"train": evaluate(_subset(train, 1024)), "heldout": evaluate(data["test"]),
                   "loss_per_epoch": [round(v, 5) for v in losses], "chance_top1": 1.0 / settings.classes}
        model.eval()
        model.save_checkpoint(path, extra={"pretrain_version": VERSION, "pretrain_seed": settings.seed,
                                           "pretrain_classes": settings.classes})
    end = time.perf_counter()
    report = {"encoder": f"TinyAudioCNN(embed_dim={settings.audio_embed_dim}, "
                         f"channels={list(settings.audio_channels)})",
              "clips": {"train": int(train.waveforms.shape[0]), "heldout": int(data["test"].waveforms.shape[0])}}
    _write_report(path, "audio", settings, metrics,
                  {"data": t_data - start, "train": t_train - t_data, "total": end - start}, report)
    return json.loads(path.with_suffix(".json").read_text())
