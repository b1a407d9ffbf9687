"""What every frozen audio encoder shares: input checks and the no-grad embedding call."""

from __future__ import annotations

import torch
from torch import nn


class AudioEncoder(nn.Module):
    """Base of the audio encoders: subclasses set `sample_rate` and `embed_dim`, define `min_samples`
    and a `forward(waveform) -> {'embedding': [N, embed_dim], ...}`."""

    sample_rate: int
    embed_dim: int

    @property
    def min_samples(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def _check_waveform(self, waveform: torch.Tensor) -> None:
        name = type(self).__name__
        if waveform.dim() != 2:
            raise ValueError(f"{name} expects a waveform of shape [batch, samples], got {tuple(waveform.shape)}")
        if waveform.shape[1] < self.min_samples:
            raise ValueError(
                f"waveform length {waveform.shape[1]} samples ({waveform.shape[1] / self.sample_rate:.3f} s) is "
                f"shorter than the {name} minimum of {self.min_samples} samples at {self.sample_rate} Hz"
            )

    def embed(self, waveform: torch.Tensor) -> torch.Tensor:
        """Frozen-encoder embedding: eval mode, no grad, ``[N, samples] -> [N, embed_dim]``; the module's
        train/eval mode is restored afterwards."""
        self._check_waveform(waveform)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                return self.forward(waveform)["embedding"]
        finally:
            self.train(was_training)
