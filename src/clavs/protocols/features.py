"""Cheap audio-visual statistics of a video, used to order real MS3 (which has no labels) into a
TF-CL stream that shifts: mean and spread of the colour of the first frame, plus the mean
log-spectrum of the audio. Nothing is learned; the whole MS3 train split takes seconds."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

#: Audio arrays whose last axis is longer than this are taken as waveforms (samples), not as
#: log-mel bands or embedding dimensions.
WAVEFORM_MIN_SAMPLES = 1024
#: Number of log-spaced frequency bands summarised from a waveform.
WAVEFORM_BANDS = 32


def compute_video_features(dataset: Any, *, frame_index: int = 0,
                           progress: Callable[[int, int], None] | None = None) -> dict[str, np.ndarray]:
    """{video name: 1-D float64 vector} for every video of `dataset`.

    `dataset` is either
      * a sequence of items (len + __getitem__, like clavs' AVSBench datasets) whose items hold
        'frames' [T,3,H,W] (or [T,H,W,3]), 'video_id', and audio as 'audio_logmel' (preferred),
        'audio' or 'audio_wav'; or
      * a store with attributes `frames` [N,T,3,H,W], `video_ids`, and `audio` (embeddings or
        log-mel) or `waveforms` [N,T,S] (like the engine's ClipStore).
    The vector is: mean and standard deviation of each colour channel of frame `frame_index`
    (6 values), then the audio summary: log-mel / embedding arrays averaged over every axis but the
    last (one value per band or dimension); waveforms turned into the mean log-energy of
    WAVEFORM_BANDS log-spaced frequency bands. Any colour scaling (uint8, [0,1], normalised) works:
    the TF-CL grouping standardises each feature over the train videos.
    """
    if hasattr(dataset, "frames") and hasattr(dataset, "video_ids"):
        audio = getattr(dataset, "audio", None)
        if audio is None:
            audio = getattr(dataset, "waveforms", None)
        if audio is None:
            raise ValueError("the store has neither `audio` nor `waveforms`: no audio to summarise")
        n = len(dataset.video_ids)
        get = lambda i: (dataset.video_ids[i], dataset.frames[i], audio[i])  # noqa: E731
    else:
        n = len(dataset)

        def get(i: int) -> tuple[str, Any, Any]:
            item = dataset[i]
            for key in ("audio_logmel", "audio", "audio_wav"):
                if item.get(key) is not None:
                    break
            else:
                raise KeyError(f"item {i} of the dataset has no 'audio_logmel', 'audio' or 'audio_wav'")
            name = item.get("video_id", item.get("name"))
            if name is None:
                raise KeyError(f"item {i} of the dataset has no 'video_id'")
            return str(name), item["frames"], item[key]

    out: dict[str, np.ndarray] = {}
    for i in range(n):
        name, frames, audio_i = get(i)
        if name in out:
            raise ValueError(f"video {name!r} appears twice in the dataset")
        out[name] = np.concatenate([colour_summary(frames, frame_index, name), audio_summary(audio_i, name)])
        if progress:
            progress(i + 1, n)
    return out


def colour_summary(frames: Any, frame_index: int = 0, name: str = "?") -> np.ndarray:
    """Mean and std of each colour channel of one frame of a [T,3,H,W] or [T,H,W,3] clip."""
    x = _numpy(frames)
    if x.ndim != 4:
        raise ValueError(f"video {name!r}: frames must be [T,3,H,W] or [T,H,W,3], got shape {x.shape}")
    if not -x.shape[0] <= frame_index < x.shape[0]:
        raise ValueError(f"video {name!r}: frame_index {frame_index} outside its {x.shape[0]} frames")
    f = x[frame_index]
    if f.shape[0] == 3:
        pixels = f.reshape(3, -1)
    elif f.shape[-1] == 3:
        pixels = f.reshape(-1, 3).T
    else:
        raise ValueError(f"video {name!r}: no colour axis of size 3 in frame shape {f.shape}")
    return np.concatenate([pixels.mean(1), pixels.std(1)])


def audio_summary(audio: Any, name: str = "?") -> np.ndarray:
    """Mean over all axes but the last (log-mel, embeddings); band log-energies for waveforms."""
    a = _numpy(audio)
    if a.ndim == 0 or a.size == 0:
        raise ValueError(f"video {name!r}: empty audio array of shape {a.shape}")
    if a.shape[-1] >= WAVEFORM_MIN_SAMPLES:
        return _band_log_energy(a.reshape(-1, a.shape[-1]))
    return a.reshape(-1, a.shape[-1]).mean(0)


def _band_log_energy(wave: np.ndarray) -> np.ndarray:
    """Mean over rows (frame-seconds) of log(1e-10 + energy) in log-spaced bands of the rFFT."""
    spec = np.abs(np.fft.rfft(wave, axis=-1)) ** 2
    nbin = spec.shape[-1]
    edges = np.unique(np.round(np.geomspace(1, nbin, WAVEFORM_BANDS + 1)).astype(int))
    bands = [spec[:, lo:hi].mean(-1) for lo, hi in zip(edges[:-1], edges[1:])]
    return np.log(np.stack(bands, -1) + 1e-10).mean(0)


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)
