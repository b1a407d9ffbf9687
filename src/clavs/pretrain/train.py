"""The two pretraining jobs, :func:`pretrain_visual` (tiny ViT: multi-label head on the pooled
embedding + per-patch class-share head) and :func:`pretrain_audio` (TinyAudioCNN, multi-label), their
shared AdamW loop (:func:`_fit`), the set accuracy they report, and the progress-bar plumbing.

The torch RNG is seeded inside a forked RNG state (the caller's global torch RNG is left untouched)
and torch runs on `settings.threads` threads (restored after), so the weights' bits do not depend on
the machine's core count.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from clavs.pretrain.cache import _write_report
from clavs.pretrain.data import AudioData, VisualData, make_audio_data, make_visual_data
from clavs.pretrain.settings import VERSION, PretrainSettings


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
