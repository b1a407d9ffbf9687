"""PANNs Cnn14 audio encoder, key-compatible with the official AudioSet checkpoints.

Architecture (Kong et al., "PANNs", 2020; official code ``qiuqiangkong/audioset_tagging_cnn``,
``pytorch/models.py``, class ``Cnn14``, MIT licence), re-implemented here:

    waveform -> log-mel [B,1,frames,64] -> bn0 over the mel bins
             -> 6 x ConvBlock (conv3x3 no bias, BN, ReLU) x2 + avg-pool (2,2) [(1,1) for block 6],
                dropout 0.2 after each block; channels 64,128,256,512,1024,2048
             -> mean over frequency -> max + mean over time -> dropout 0.5
             -> fc1 + ReLU = 2048-d embedding -> fc_audioset + sigmoid = 527 AudioSet scores

Differences from the original, on purpose:

* The front end is :class:`LogMelFrontEnd` (``torch.stft`` + Slaney mel, fp32 even under
  autocast) instead of torchlibrosa's conv STFT. It computes the same log-mel, so the
  checkpoint's ``spectrogram_extractor.*`` / ``logmel_extractor.*`` keys are dropped on load.
* SpecAugment and mixup, which the original applies only in training mode, are omitted: clavs
  uses Cnn14 as a frozen encoder. ``forward`` in training mode still applies dropout and uses
  batch statistics in BN, as the original does.

Settings per sample rate (the two released checkpoints):

* 32 kHz, ``Cnn14_mAP=0.431.pth``: window 1024, hop 320, 64 mels, 50-14000 Hz (official README /
  ``scripts/0_inference.sh``).
* 16 kHz, ``Cnn14_16k_mAP=0.438.pth``: window 512, hop 160, 64 mels, 50-8000 Hz (the official
  README's 16 kHz inference command: ``--sample_rate=16000 --window_size=512 --hop_size=160
  --mel_bins=64 --fmin=50 --fmax=8000``).

A 16 kHz waveform given to the 32 kHz model must first be resampled by the caller
(:func:`resample_audio`); the model cannot tell and would silently compute wrong features.
"""

from __future__ import annotations

import importlib
import math
import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio_base import AudioEncoder
from .logmel import LogMelFrontEnd, slaney_mel_filterbank

CNN14_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
CNN14_EMBED_DIM = 2048
AUDIOSET_CLASSES = 527

# Front-end settings of the official checkpoints, keyed by sample rate (sources in module doc).
CNN14_FRONT_END: dict[int, dict[str, float]] = {
    32000: {"n_fft": 1024, "hop": 320, "fmin": 50.0, "fmax": 14000.0},
    16000: {"n_fft": 512, "hop": 160, "fmin": 50.0, "fmax": 8000.0},
}

# Keys of the original torchlibrosa front end; they hold constants we recompute, so they are dropped.
FRONT_END_PREFIXES = ("spectrogram_extractor.", "logmel_extractor.")
_NUM_HALVING_POOLS = 5  # blocks 1-5 halve time and frequency


class CheckpointError(RuntimeError):
    """A checkpoint file cannot be loaded into the model; the message names the file and keys."""


class ConvBlock(nn.Module):
    """(conv3x3 without bias -> BN -> ReLU) x 2, then average pooling. Official parameter names."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        nn.init.xavier_uniform_(self.conv1.weight)
        nn.init.xavier_uniform_(self.conv2.weight)

    def forward(self, x: torch.Tensor, pool_size: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        if pool_size != (1, 1):
            x = F.avg_pool2d(x, kernel_size=pool_size)
        return x


class Cnn14(AudioEncoder):
    """PANNs Cnn14 with a ``torch.stft`` front end. ``embed_dim`` is ``channels[-1]`` (2048).

    Args:
        sample_rate: 32000 or 16000; selects the official front-end settings.
        mel_bins: number of mel bands (64 in both checkpoints).
        classes_num: size of the AudioSet head (527).
        channels: output channels of the six conv blocks. Only the default matches the official
            checkpoints; smaller values exist so tests can build a fast, structurally identical model.
    """

    def __init__(
        self,
        sample_rate: int = 32000,
        mel_bins: int = 64,
        classes_num: int = AUDIOSET_CLASSES,
        channels: Sequence[int] = CNN14_CHANNELS,
    ) -> None:
        super().__init__()
        if sample_rate not in CNN14_FRONT_END:
            raise ValueError(f"Cnn14 sample_rate must be one of {sorted(CNN14_FRONT_END)}, got {sample_rate}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 6 or min(channels) <= 0:
            raise ValueError(f"Cnn14 needs 6 positive channel counts, got {channels}")
        if mel_bins < 2**_NUM_HALVING_POOLS:
            raise ValueError(f"mel_bins must be >= {2**_NUM_HALVING_POOLS} to survive 5 poolings, got {mel_bins}")
        self.sample_rate = int(sample_rate)
        self.channels = channels
        self.embed_dim = channels[-1]
        self.front_end = LogMelFrontEnd(self.sample_rate, n_mels=mel_bins, **CNN14_FRONT_END[self.sample_rate])
        self.bn0 = nn.BatchNorm2d(mel_bins)
        in_ch = 1
        for idx, out_ch in enumerate(channels, start=1):
            setattr(self, f"conv_block{idx}", ConvBlock(in_ch, out_ch))
            in_ch = out_ch
        self.fc1 = nn.Linear(in_ch, in_ch, bias=True)
        self.fc_audioset = nn.Linear(in_ch, classes_num, bias=True)
        for fc in (self.fc1, self.fc_audioset):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    @property
    def min_samples(self) -> int:
        """Shortest waveform the network accepts: the time axis must survive 5 halvings.

        ``1 + samples // hop >= 32`` frames, i.e. 9920 samples (0.31 s) at 32 kHz, 4960 at 16 kHz.
        """
        return (2**_NUM_HALVING_POOLS - 1) * self.front_end.hop

    def forward(self, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
        """``waveform [B, samples]`` at ``self.sample_rate`` -> ``{'clipwise_output' [B,527], 'embedding' [B,2048]}``."""
        self._check_waveform(waveform)
        x = self.front_end(waveform)  # [B, 1, frames, mels], fp32
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel bin
        for idx in range(1, 7):
            block: ConvBlock = getattr(self, f"conv_block{idx}")
            x = block(x, pool_size=(2, 2) if idx < 6 else (1, 1))
            x = F.dropout(x, p=0.2, training=self.training)
        x = x.mean(dim=3)  # over frequency -> [B, C, time]
        x = x.amax(dim=2) + x.mean(dim=2)
        x = F.dropout(x, p=0.5, training=self.training)
        x = F.relu(self.fc1(x))
        embedding = F.dropout(x, p=0.5, training=self.training)
        clipwise_output = torch.sigmoid(self.fc_audioset(x))
        return {"clipwise_output": clipwise_output, "embedding": embedding}


    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        sample_rate: int = 32000,
        *,
        allow_unsafe_globals: bool = False,
        channels: Sequence[int] = CNN14_CHANNELS,
        classes_num: int = AUDIOSET_CLASSES,
        mel_bins: int = 64,
    ) -> "Cnn14":
        """Build a Cnn14 and load an official-layout checkpoint into it, strictly.

        Accepts ``{'model': state_dict, ...}`` (the PANNs training-script format, possibly with
        ``iteration`` and ``sampler``) or a bare state_dict. The original front-end keys
        (``spectrogram_extractor.*``, ``logmel_extractor.*``) are dropped after checking that their
        shapes (and the mel matrix values) match the requested ``sample_rate``. Any other missing,
        unexpected or mis-shaped key raises :class:`CheckpointError` naming the key(s) and the file.

        The file is read with ``torch.load(weights_only=True)``. If that fails because the file
        pickles other objects (e.g. numpy arrays in the ``sampler`` state), a
        :class:`CheckpointError` lists the globals reported by
        ``torch.serialization.get_unsafe_globals_in_checkpoint``. Passing
        ``allow_unsafe_globals=True`` (only for files you trust) retries with exactly those globals
        allowlisted via ``torch.serialization.safe_globals`` (plus numpy's dtype classes when numpy
        is involved, which that function does not report); if it still fails, it falls back to
        ``weights_only=False`` with a warning, which executes arbitrary pickled code.
        """
        path = Path(path)
        raw = _load_checkpoint_object(path, allow_unsafe_globals)
        state = _extract_state_dict(raw, path)
        model = cls(sample_rate=sample_rate, mel_bins=mel_bins, classes_num=classes_num, channels=channels)
        state = _check_and_drop_front_end(state, model.front_end, path)
        _load_strict(model, state, path)
        model.eval()
        return model


# --------------------------------------------------------------------------------------------
# Checkpoint loading helpers


def _resolve_global(name: str) -> Any:
    module_name, _, attr = name.rpartition(".")
    obj: Any = importlib.import_module(module_name)
    return getattr(obj, attr)


def _numpy_dtype_classes() -> list[tuple[Any, str]]:
    """numpy >= 1.25 rebuilds dtypes through per-type classes (``numpy.dtypes.Int64DType`` ...).

    ``get_unsafe_globals_in_checkpoint`` does not report them, yet ``weights_only`` unpickling of
    any numpy array needs them, so they are allowlisted together with the reported numpy globals.
    """
    dtypes_mod = getattr(np, "dtypes", None)
    if dtypes_mod is None:
        return []
    found = []
    for attr in dir(dtypes_mod):
        obj = getattr(dtypes_mod, attr)
        if isinstance(obj, type) and issubclass(obj, np.dtype):
            found.append((obj, f"numpy.dtypes.{attr}"))
    return found


def _load_checkpoint_object(path: Path, allow_unsafe_globals: bool) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"Cnn14 checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first_error = err
    try:
        unsafe = list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as err:  # noqa: BLE001 - report the original failure below
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({err})") from first_error
    if not allow_unsafe_globals:
        raise CheckpointError(
            f"{path}: torch.load(weights_only=True) refused the file because it pickles non-tensor "
            f"globals: {unsafe}. If you trust this file, pass allow_unsafe_globals=True to "
            f"Cnn14.from_checkpoint to allowlist exactly these globals (it falls back to "
            f"weights_only=False only if that is not enough)."
        ) from first_error
    allowlist: list[tuple[Any, str]] = []
    try:
        for name in unsafe:
            allowlist.append((_resolve_global(name), name))
        if any(name.startswith("numpy") for name in unsafe):
            allowlist.extend(_numpy_dtype_classes())
        with torch.serialization.safe_globals(allowlist):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (ImportError, AttributeError, pickle.UnpicklingError) as err:
        warnings.warn(
            f"{path}: weights_only loading with allowlisted globals {unsafe} failed ({type(err).__name__}); "
            f"falling back to weights_only=False because allow_unsafe_globals=True. This runs pickled code.",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.load(path, map_location="cpu", weights_only=False)


def _extract_state_dict(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(raw, Mapping) and "model" in raw and isinstance(raw["model"], Mapping):
        state = raw["model"]
    elif isinstance(raw, Mapping) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        state = raw
    else:
        top = sorted(map(str, raw.keys())) if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(f"{path}: expected a state_dict or a dict with a 'model' state_dict, found {top}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entries that are not tensors: {bad}")
    state = dict(state)
    # Checkpoints saved from a DataParallel wrapper prefix every key with 'module.'.
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _check_and_drop_front_end(
    state: dict[str, torch.Tensor], front_end: LogMelFrontEnd, path: Path
) -> dict[str, torch.Tensor]:
    """Verify the original front-end constants agree with our settings, then drop them."""
    n_bins = front_end.n_fft // 2 + 1
    expected = {
        "spectrogram_extractor.stft.conv_real.weight": (n_bins, 1, front_end.n_fft),
        "spectrogram_extractor.stft.conv_imag.weight": (n_bins, 1, front_end.n_fft),
        "logmel_extractor.melW": (n_bins, front_end.n_mels),
    }
    for key, shape in expected.items():
        if key in state and tuple(state[key].shape) != shape:
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(state[key].shape)} but a {front_end.sample_rate} Hz Cnn14 "
                f"expects {shape}; was the checkpoint trained at another sample rate?"
            )
    if "logmel_extractor.melW" in state:
        ours = slaney_mel_filterbank(
            front_end.sample_rate, front_end.n_fft, front_end.n_mels, front_end.fmin, front_end.fmax
        )
        theirs = state["logmel_extractor.melW"].double().numpy()
        if not np.allclose(theirs, ours, rtol=1e-4, atol=1e-6):
            raise CheckpointError(
                f"{path}: logmel_extractor.melW differs from the mel filterbank for sample_rate="
                f"{front_end.sample_rate}, fmin={front_end.fmin}, fmax={front_end.fmax} "
                f"(max abs diff {np.abs(theirs - ours).max():.3g}); wrong sample_rate?"
            )
    return {k: v for k, v in state.items() if not k.startswith(FRONT_END_PREFIXES)}


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state_dict mismatch; missing keys: {missing}; unexpected keys: {unexpected}")
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise CheckpointError(f"{path}: shape mismatch for " + "; ".join(mismatched))
    model.load_state_dict(state, strict=True)


# --------------------------------------------------------------------------------------------
# Resampling


def resample_audio(
    waveform: torch.Tensor, orig_sr: int, new_sr: int, lowpass_width: int = 6, rolloff: float = 0.99
) -> torch.Tensor:
    """Band-limited polyphase resampling of ``[..., samples]`` from ``orig_sr`` to ``new_sr``.

    Windowed-sinc interpolation (Hann-squared window, ``lowpass_width`` zero crossings, cutoff at
    ``rolloff`` times the lower Nyquist frequency), evaluated for the ``new/gcd`` output phases of
    every block of ``orig/gcd`` input samples with one strided ``conv1d``. Output length is
    ``ceil(samples * new_sr / orig_sr)``. The signal is zero-padded, so the first and last
    ~``lowpass_width`` input samples are slightly attenuated. Computed in float64 for accuracy,
    returned in the input dtype.

    Use it to feed 16 kHz audio to the 32 kHz Cnn14 (or vice versa): the model never resamples.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got orig_sr={orig_sr}, new_sr={new_sr}")
    if orig_sr == new_sr:
        return waveform.clone()
    g = math.gcd(int(orig_sr), int(new_sr))
    up, down = int(new_sr) // g, int(orig_sr) // g  # per block: `down` inputs -> `up` outputs
    cutoff = min(up, down) * rolloff  # in units where the input rate is `down`
    half = math.ceil(lowpass_width * down / cutoff)  # kernel half-width in input samples
    # Time (in input samples) from each output phase to each tap of the kernel.
    taps = torch.arange(-half, half + down, dtype=torch.float64) / down
    phases = -torch.arange(up, dtype=torch.float64)[:, None] / up
    t = (taps[None, :] + phases) * cutoff
    t = t.clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * math.pi / (2 * lowpass_width)) ** 2
    kernels = (torch.sinc(t) * window * (cutoff / down)).unsqueeze(1)  # [up, 1, taps]; sinc(t)=sin(pi t)/(pi t)

    shape = waveform.shape
    length = shape[-1]
    x = waveform.reshape(-1, 1, length).to(torch.float64)
    x = F.pad(x, (half, half + down))
    y = F.conv1d(x, kernels, stride=down)  # [batch, up, blocks]
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    out_len = math.ceil(length * up / down)
    return y[:, :out_len].reshape(*shape[:-1], out_len).to(waveform.dtype)
