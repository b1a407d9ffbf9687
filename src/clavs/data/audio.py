"""Audio I/O and the VGGish log-mel front end used by AVSBench.

AVSBench stores, for every 5 s clip, a pickled torch tensor [5, 1, 96, 64]: VGGish log-mel examples
(25 ms Hann window, 10 ms hop, 512-point FFT magnitude, 64 HTK-mel bands 125-7500 Hz, log(mel + 0.01),
non-overlapping 0.96 s examples), padded to 5 examples by repeating the last one. This module
computes exactly that front end in numpy (float64, as VGGish does) and reads/writes the pickles.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from clavs.utils.io import atomic_write_bytes

VGGISH_SAMPLE_RATE = 16000
WINDOW_SECONDS = 0.025
HOP_SECONDS = 0.010
NUM_MEL_BINS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
EXAMPLE_SECONDS = 0.96
AVSBENCH_SECONDS = 5
LOGMEL_SHAPE = (AVSBENCH_SECONDS, 1, 96, NUM_MEL_BINS)


# ----------------------------------------------------------------------------------------- wav I/O
def decode_wav(data: bytes, source: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode audio file bytes as a float32 mono waveform (channels averaged) and its sample rate.

    Integer PCM is scaled to [-1, 1) by 1/32768 (16-bit), as VGGish's reader does. `source` names
    the data in error messages.
    """
    try:
        wave, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError with terse messages
        raise ValueError(f"cannot read audio file {source}: {exc}") from exc
    if wave.shape[0] == 0:
        raise ValueError(f"audio file {source} holds no samples")
    return wave.mean(axis=1).astype(np.float32), int(sr)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Read an audio file as a float32 mono waveform in [-1, 1] (channels averaged) and its sample rate."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    return decode_wav(path.read_bytes(), str(path))


def encode_wav(waveform: np.ndarray, sr: int = VGGISH_SAMPLE_RATE, name: str = "<waveform>") -> bytes:
    """16-bit PCM WAV bytes of a mono waveform (values in [-1, 1]; beyond that they are clipped)."""
    wave = np.asarray(waveform, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D mono waveform, got shape {wave.shape}")
    if not np.all(np.isfinite(wave)):
        raise ValueError(f"{name}: waveform contains NaN or inf")
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), int(sr), subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav(path: str | os.PathLike, waveform: np.ndarray, sr: int = VGGISH_SAMPLE_RATE) -> Path:
    """Write a mono waveform (values in [-1, 1], clipped) as 16-bit PCM WAV, atomically."""
    return atomic_write_bytes(path, encode_wav(waveform, sr, f"write_wav({path})"))


# ------------------------------------------------------------------------------- VGGish front end
def hertz_to_mel(freq_hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale, as VGGish uses it: 1127 ln(1 + f / 700)."""
    return 1127.0 * np.log1p(np.asarray(freq_hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix(num_spectrogram_bins: int = 257, sample_rate: int = VGGISH_SAMPLE_RATE,
                      num_mel_bins: int = NUM_MEL_BINS, lower_hz: float = MEL_MIN_HZ,
                      upper_hz: float = MEL_MAX_HZ) -> np.ndarray:
    """Triangular mel weights [num_spectrogram_bins, num_mel_bins] (VGGish's construction).

    Triangles are built in the mel domain over band edges evenly spaced in mel between lower_hz and
    upper_hz; the DC bin gets weight zero.
    """
    nyquist = sample_rate / 2.0
    if not 0.0 <= lower_hz < upper_hz <= nyquist:
        raise ValueError(f"mel band edges must satisfy 0 <= lower ({lower_hz}) < upper ({upper_hz}) <= nyquist ({nyquist})")
    bin_mel = hertz_to_mel(np.linspace(0.0, nyquist, num_spectrogram_bins))
    edges = np.linspace(hertz_to_mel(lower_hz), hertz_to_mel(upper_hz), num_mel_bins + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel[:, None] - lower) / (center - lower)
    falling = (upper - bin_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    return weights


def _frame(x: np.ndarray, length: int, hop: int) -> np.ndarray:
    """Split the first axis into frames [n, length, ...]; a trailing partial frame is dropped."""
    n = 1 + (x.shape[0] - length) // hop
    if n <= 0:
        return np.zeros((0, length) + x.shape[1:], dtype=x.dtype)
    strides = (x.strides[0] * hop,) + x.strides
    return np.lib.stride_tricks.as_strided(x, shape=(n, length) + x.shape[1:], strides=strides, writeable=False)


def vggish_spectrogram(waveform: np.ndarray, sr: int = VGGISH_SAMPLE_RATE) -> np.ndarray:
    """STFT magnitude [frames, fft/2+1]: periodic Hann window of 25 ms, 10 ms hop, FFT = next pow2."""
    win = int(round(sr * WINDOW_SECONDS))
    hop = int(round(sr * HOP_SECONDS))
    fft_len = 2 ** int(np.ceil(np.log2(win)))
    hann = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win) / win)  # periodic, not symmetric
    frames = _frame(np.asarray(waveform, dtype=np.float64), win, hop)
    return np.abs(np.fft.rfft(frames * hann, fft_len))


def vggish_logmel(waveform: np.ndarray, sr: int = VGGISH_SAMPLE_RATE) -> np.ndarray:
    """VGGish input examples [n, 1, 96, 64] (float32) of a mono waveform sampled at 16 kHz.

    n = number of whole 0.96 s examples (5 for a 5 s clip). Other sample rates are refused:
    resample first (the synthetic data is generated at 16 kHz, AVSBench wavs are 16 kHz).
    """
    wave = np.asarray(waveform)
    if wave.ndim == 2:  # [samples, channels], as VGGish accepts
        wave = wave.mean(axis=1)
    if wave.ndim != 1:
        raise ValueError(f"vggish_logmel: expected a mono waveform, got shape {wave.shape}")
    if sr != VGGISH_SAMPLE_RATE:
        raise ValueError(f"vggish_logmel: sample rate {sr} Hz is not supported; resample to {VGGISH_SAMPLE_RATE} Hz first")
    spec = vggish_spectrogram(wave, sr)
    mel = spec @ vggish_mel_matrix(spec.shape[1], sr)
    log_mel = np.log(mel + LOG_OFFSET)
    frames_per_example = int(round(EXAMPLE_SECONDS / HOP_SECONDS))
    examples = _frame(log_mel, frames_per_example, frames_per_example)
    return np.ascontiguousarray(examples[:, None, :, :], dtype=np.float32)


def fit_examples(examples: np.ndarray, n: int = AVSBENCH_SECONDS) -> np.ndarray:
    """Pad (repeating the last example, as AVSBench's preprocess does) or truncate to n examples."""
    if examples.shape[0] == 0:
        raise ValueError("audio shorter than one 0.96 s VGGish example; cannot build a log-mel tensor")
    if examples.shape[0] >= n:
        return examples[:n]
    pad = np.repeat(examples[-1:], n - examples.shape[0], axis=0)
    return np.concatenate([examples, pad], axis=0)


def avsbench_logmel(waveform: np.ndarray, sr: int = VGGISH_SAMPLE_RATE) -> torch.Tensor:
    """AVSBench audio input: float32 tensor [5, 1, 96, 64] (padded by repeating the last example)."""
    return torch.from_numpy(fit_examples(vggish_logmel(waveform, sr)).copy())


# -------------------------------------------------------------------------------- log-mel pickles


class _StableStoragePickler(pickle.Pickler):
    """A plain pickler whose output does not depend on memory addresses.

    torch pickles a storage as `_load_from_bytes(<legacy torch.save bytes>)`, and the legacy format
    names the storage by its memory address. We rename that key to "0" inside the legacy bytes (the
    key is a BINUNICODE string in unframed protocol-2 pickles, so lengths stay consistent). The
    unpickled object is identical to what a plain `pickle.dump` gives.
    """

    def reducer_override(self, obj):  # noqa: D401 - pickle hook
        if isinstance(obj, (torch.storage.TypedStorage, torch.UntypedStorage)):
            fn, (payload,) = obj.__reduce__()
            key = str(obj._cdata).encode()
            old = b"X" + len(key).to_bytes(4, "little") + key
            new = b"X" + (1).to_bytes(4, "little") + b"0"
            if payload.count(old) < 2:
                raise RuntimeError("unexpected torch storage pickle layout; cannot make it deterministic")
            return fn, (payload.replace(old, new),)
        return NotImplemented


def logmel_pickle_bytes(tensor: torch.Tensor) -> bytes:
    """The pickle bytes save_logmel_pickle writes (deterministic for equal tensors)."""
    t = torch.as_tensor(tensor).detach().to(torch.float32).clone().contiguous().requires_grad_(True)
    buf = io.BytesIO()
    _StableStoragePickler(buf, protocol=pickle.DEFAULT_PROTOCOL).dump(t)
    return buf.getvalue()


def save_logmel_pickle(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Write a log-mel tensor as AVSBench's preprocess does: a pickled float32 tensor with
    requires_grad=True (loaders call .detach()), atomically and byte-deterministically."""
    shape = tuple(torch.as_tensor(tensor).shape)
    if shape != LOGMEL_SHAPE:
        raise ValueError(f"save_logmel_pickle({path}): expected shape {LOGMEL_SHAPE}, got {shape}")
    return atomic_write_bytes(path, logmel_pickle_bytes(tensor))


def _load_storage_bytes(data: bytes) -> object:
    """What torch's pickled storage `_load_from_bytes(b)` is, read with torch's weights-only loader
    (torch's own `_load_from_bytes` unpickles the bytes with weights_only=False)."""
    if not isinstance(data, bytes):
        raise pickle.UnpicklingError("a pickled storage must be bytes")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _LogmelUnpickler(pickle.Unpickler):
    """Admits only what a pickled float tensor is made of (as AVSBench's preprocess writes it): the
    tensor rebuild function, its storage (read weights-only) and the empty hooks OrderedDict. Any other
    global, e.g. `os.system` in a crafted `__reduce__`, is refused before it can be called."""

    _ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): None,
        ("torch._utils", "_rebuild_tensor"): None,
        ("collections", "OrderedDict"): None,
        ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    }

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle hook
        key = (module, name)
        if key not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load global {module}.{name} (a log-mel pickle holds only a "
                                         f"tensor; this file would run other code)")
        replacement = self._ALLOWED[key]
        return replacement if replacement is not None else super().find_class(module, name)

    def persistent_load(self, pid):  # noqa: D401 - pickle hook
        raise pickle.UnpicklingError("refused a persistent id (not a plain pickled tensor)")


def load_logmel_pickle(path: str | os.PathLike) -> torch.Tensor:
    """Load an AVSBench log-mel pickle as a detached float32 tensor [5, 1, 96, 64].

    The file is untrusted: it is unpickled with `_LogmelUnpickler`, which runs no code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"log-mel pickle not found: {path}")
    try:
        with open(path, "rb") as f:
            obj = _LogmelUnpickler(f).load()
    except Exception as exc:
        raise ValueError(f"cannot unpickle log-mel file {path}: {exc}") from None
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"log-mel file {path} holds a {type(obj).__name__}, expected a torch tensor")
    if tuple(obj.shape) != LOGMEL_SHAPE:
        raise ValueError(f"log-mel file {path} has shape {tuple(obj.shape)}, expected {LOGMEL_SHAPE}")
    return obj.detach().to(torch.float32)
