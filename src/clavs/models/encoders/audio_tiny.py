"""A small log-mel CNN audio encoder for the CPU ("tiny") presets.

It plays the role Cnn14 plays in the paper preset, at a fraction of the cost: one 16 kHz
waveform per video second ``[N, 16000]`` -> one ``embed_dim``-d vector. It has the same
interface as :class:`clavs.models.encoders.cnn14.Cnn14` (``embed_dim``, ``sample_rate``,
``min_samples``, ``embed()``, ``forward() -> dict`` with ``'embedding'``).

Its weights are not shipped: ``clavs pretrain`` trains it once (with the optional
classification head, ``num_classes``) on synthetic sound classes disjoint from the benchmark
categories and caches the result, so methods designed for pretrained encoders start from a
pretrained one. The pretraining job itself lives outside this module; it stores the result with
:meth:`TinyAudioCNN.save_checkpoint` and the benchmark reloads it with
:meth:`TinyAudioCNN.from_checkpoint` (architecture config travels inside the file).

Structure, mirroring Cnn14 at small scale: log-mel (512-point window, hop 160, 64 mels,
50-8000 Hz) -> BN over mel bins -> ``len(channels)`` blocks of (conv3x3 -> BN -> ReLU ->
avg-pool 2x2) -> mean over frequency -> max + mean over time -> dropout -> Linear + ReLU
(embedding) -> optional Linear head (logits).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clavs.utils.io import atomic_write_bytes

from .audio_base import AudioEncoder
from .logmel import LogMelFrontEnd

TINY_SAMPLE_RATE = 16000
CHECKPOINT_FORMAT = "clavs.TinyAudioCNN/1"


class _TinyBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.relu(self.bn(self.conv(x))), kernel_size=2)


class TinyAudioCNN(AudioEncoder):
    """Small CNN audio encoder: ``[N, samples]`` at 16 kHz -> ``[N, embed_dim]``.

    Args:
        embed_dim: size of the embedding (default 128, the per-second width of VGGish in AVSBench).
        channels: output channels of the conv blocks (3 or 4 blocks recommended).
        num_classes: if given, adds ``head = Linear(embed_dim, num_classes)`` for pretraining and
            ``forward`` also returns ``'logits'``.
        dropout: dropout on the pooled features (training mode only).
        sample_rate, n_fft, hop, n_mels, fmin, fmax: log-mel settings.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 128),
        num_classes: int | None = None,
        dropout: float = 0.1,
        sample_rate: int = TINY_SAMPLE_RATE,
        n_fft: int = 512,
        hop: int = 160,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 8000.0,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if not channels or min(channels) <= 0:
            raise ValueError(f"channels must be non-empty positive ints, got {channels}")
        if embed_dim <= 0:
            raise ValueError(f"embed_dim must be positive, got {embed_dim}")
        if num_classes is not None and num_classes <= 0:
            raise ValueError(f"num_classes must be positive or None, got {num_classes}")
        if n_mels < 2 ** len(channels):
            raise ValueError(f"n_mels={n_mels} is too small for {len(channels)} 2x2 poolings")
        # Everything needed to rebuild the architecture; stored in checkpoints.
        self.config: dict[str, Any] = {
            "embed_dim": int(embed_dim), "channels": list(channels), "num_classes": num_classes,
            "dropout": float(dropout), "sample_rate": int(sample_rate), "n_fft": int(n_fft), "hop": int(hop),
            "n_mels": int(n_mels), "fmin": float(fmin), "fmax": float(fmax),
        }
        self.sample_rate = int(sample_rate)
        self.embed_dim = int(embed_dim)
        self.channels = channels
        self.num_classes = num_classes
        self.dropout = float(dropout)
        self.front_end = LogMelFrontEnd(sample_rate, n_fft=n_fft, hop=hop, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.bn0 = nn.BatchNorm2d(n_mels)
        blocks = []
        in_ch = 1
        for out_ch in channels:
            blocks.append(_TinyBlock(in_ch, out_ch))
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(in_ch, self.embed_dim)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes is not None else None

    @property
    def min_samples(self) -> int:
        """Shortest input: the time axis (``1 + samples // hop`` frames) must survive every 2x pooling."""
        return (2 ** len(self.blocks) - 1) * self.front_end.hop

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """``waveform [B, samples]`` -> ``{'embedding': [B, embed_dim]}`` (+ ``'logits'`` with a head)."""
        self._check_waveform(waveform)
        x = self.front_end(waveform)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for block in self.blocks:
            x = block(x)
        x = x.mean(dim=3)
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, p=self.dropout, training=self.training)
        embedding = F.relu(self.fc(x))
        out = {"embedding": embedding}
        if self.head is not None:
            out["logits"] = self.head(embedding)
        return out

    def save_checkpoint(self, path: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> Path:
        """Atomically write ``{'format', 'config', 'model': state_dict, **extra}`` to ``path``.

        ``extra`` may hold plain metadata (numbers, strings, lists, dicts) such as the pretraining
        seed; it must stay loadable with ``torch.load(weights_only=True)``.
        """
        payload: dict[str, Any] = dict(extra or {})
        payload.update(format=CHECKPOINT_FORMAT, config=dict(self.config), model=self.state_dict())
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> "TinyAudioCNN":
        """Rebuild the model saved by :meth:`save_checkpoint` and load its weights strictly (eval mode).

        Read with ``torch.load(weights_only=True)``. A file that is not such a checkpoint, or whose
        weights do not match its stored config, raises ``ValueError`` naming the file and the keys.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TinyAudioCNN checkpoint not found: {path}")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
            from clavs.errors import short_reason

            raise ValueError(f"{path}: not a readable TinyAudioCNN checkpoint ({short_reason(err)})") from err
        if not isinstance(raw, Mapping) or raw.get("format") != CHECKPOINT_FORMAT:
            found = raw.get("format") if isinstance(raw, Mapping) else type(raw).__name__
            raise ValueError(f"{path}: expected a checkpoint with format '{CHECKPOINT_FORMAT}', found {found!r}")
        try:
            model = cls(**raw["config"])
        except TypeError as err:
            raise ValueError(f"{path}: invalid TinyAudioCNN config {raw['config']}: {err}") from err
        state = raw["model"]
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or unexpected:
            raise ValueError(f"{path}: state_dict mismatch; missing keys: {missing}; unexpected keys: {unexpected}")
        bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise ValueError(f"{path}: shape mismatch for keys {bad}")
        model.load_state_dict(state, strict=True)
        return model.eval()
