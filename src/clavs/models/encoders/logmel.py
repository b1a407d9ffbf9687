"""Log-mel front end built on ``torch.stft`` and a Slaney mel filterbank.

This replaces the conv-based STFT of torchlibrosa used by the original PANNs code. The numbers
are the same (periodic Hann window, centred frames with reflect padding, power spectrogram,
Slaney-normalised mel filters, ``10*log10(max(x, 1e-10))`` with ``ref=1`` and no ``top_db``), but:

* it needs neither librosa nor torchlibrosa (the filterbank is computed here with numpy);
* it always runs in float32, even inside a bf16/fp16 autocast region. torchlibrosa's conv STFT
  silently runs in bf16 under autocast and is then off by up to ~0.17 dB.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# Constants of the Slaney (Auditory Toolbox) mel scale, as used by librosa with htk=False:
# linear below 1 kHz (200/3 Hz per mel), logarithmic above it (27 mels per factor 6.4).
_SLANEY_HZ_PER_MEL = 200.0 / 3.0
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_HZ_PER_MEL  # 15 mels
_SLANEY_LOG_STEP = math.log(6.4) / 27.0

AMIN = 1e-10  # power floor before the log, as in PANNs (amin=1e-10, ref=1.0, top_db=None)


def hz_to_mel_slaney(freq_hz: np.ndarray | float) -> np.ndarray:
    """Convert Hz to mels on the Slaney scale (librosa ``hz_to_mel(htk=False)``)."""
    freq = np.asarray(freq_hz, dtype=np.float64)
    linear = freq / _SLANEY_HZ_PER_MEL
    # np.maximum keeps log() away from 0 in the (unused) branch for low frequencies.
    logarithmic = _SLANEY_BREAK_MEL + np.log(np.maximum(freq, 1e-300) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return np.where(freq >= _SLANEY_BREAK_HZ, logarithmic, linear)


def mel_to_hz_slaney(mels: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel_slaney`."""
    mel = np.asarray(mels, dtype=np.float64)
    linear = mel * _SLANEY_HZ_PER_MEL
    logarithmic = _SLANEY_BREAK_HZ * np.exp(_SLANEY_LOG_STEP * (mel - _SLANEY_BREAK_MEL))
    return np.where(mel >= _SLANEY_BREAK_MEL, logarithmic, linear)


def slaney_mel_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangular mel filterbank with Slaney area normalisation.

    Equivalent to ``librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
    htk=False, norm='slaney').T`` (computed in float64).

    Returns:
        Array of shape ``[n_fft // 2 + 1, n_mels]`` so that ``power_spec @ fb`` gives mel power.
    """
    if sr <= 0 or n_fft <= 0 or n_mels <= 0:
        raise ValueError(f"sr, n_fft and n_mels must be positive, got sr={sr}, n_fft={n_fft}, n_mels={n_mels}")
    if not 0.0 <= fmin < fmax <= sr / 2.0:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    bin_freqs = np.linspace(0.0, sr / 2.0, n_fft // 2 + 1)
    # n_mels triangles need n_mels + 2 edge frequencies, equally spaced in mel.
    edge_mels = np.linspace(hz_to_mel_slaney(fmin), hz_to_mel_slaney(fmax), n_mels + 2)
    edges_hz = mel_to_hz_slaney(edge_mels)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - bin_freqs[None, :]  # [n_mels + 2, n_bins]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))  # [n_mels, n_bins]
    # Slaney normalisation: every triangle gets (roughly) unit area in Hz.
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return np.ascontiguousarray(weights.T)


class LogMelFrontEnd(nn.Module):
    """Waveform ``[B, samples]`` -> log-mel in dB ``[B, 1, frames, n_mels]``.

    ``frames = 1 + samples // hop`` (centred frames). The window and filterbank are non-persistent
    buffers, so this module adds no keys to a ``state_dict`` (and Cnn14 stays key-compatible with
    the official checkpoints once their front-end keys are dropped). Computation is always fp32:
    autocast is disabled inside ``forward`` and the input is cast to float32.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop: int = 320,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 14000.0,
    ) -> None:
        super().__init__()
        if hop <= 0:
            raise ValueError(f"hop must be positive, got {hop}")
        self.sample_rate = int(sample_rate)
        self.n_fft = int(n_fft)
        self.hop = int(hop)
        self.n_mels = int(n_mels)
        self.fmin = float(fmin)
        self.fmax = float(fmax)
        mel = slaney_mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)
        self.register_buffer("mel_fb", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(self.n_fft, periodic=True), persistent=False)

    @property
    def min_samples(self) -> int:
        """Shortest input accepted: reflect padding needs more samples than ``n_fft // 2``."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Number of output frames for an input of ``num_samples`` samples."""
        return 1 + num_samples // self.hop

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        if waveform.dim() != 2:
            raise ValueError(f"LogMelFrontEnd expects a waveform of shape [batch, samples], got {tuple(waveform.shape)}")
        if waveform.shape[1] < self.min_samples:
            raise ValueError(
                f"waveform has {waveform.shape[1]} samples; the front end (n_fft={self.n_fft}) "
                f"needs at least {self.min_samples}"
            )
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.float()
            spec = torch.stft(
                x,
                n_fft=self.n_fft,
                hop_length=self.hop,
                win_length=self.n_fft,
                window=self.window.float(),
                center=True,
                pad_mode="reflect",
                normalized=False,
                onesided=True,
                return_complex=True,
            )  # [B, n_fft//2+1, frames]
            power = torch.view_as_real(spec).pow(2).sum(-1)
            mel = torch.matmul(power.transpose(1, 2), self.mel_fb.float())  # [B, frames, n_mels]
            log_mel = 10.0 * torch.log10(torch.clamp(mel, min=AMIN))
        return log_mel.unsqueeze(1)

    def extra_repr(self) -> str:
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop={self.hop}, n_mels={self.n_mels}, "
            f"fmin={self.fmin}, fmax={self.fmax}"
        )
