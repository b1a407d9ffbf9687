"""Tests of clavs.data.audio against an independent, loop-based VGGish front end written here."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from clavs.data import audio


# ----------------------------------------------------------------- independent reference (loops)
def ref_mel_matrix(n_bins: int = 257, sr: int = 16000, n_mel: int = 64, lo: float = 125.0, hi: float = 7500.0):
    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    edges = [mel(lo) + (mel(hi) - mel(lo)) * i / (n_mel + 1) for i in range(n_mel + 2)]
    w = np.zeros((n_bins, n_mel))
    for j in range(1, n_bins):  # the DC bin keeps weight 0
        m = mel(j * (sr / 2) / (n_bins - 1))
        for i in range(n_mel):
            left, centre, right = edges[i], edges[i + 1], edges[i + 2]
            if left < m <= centre:
                w[j, i] = (m - left) / (centre - left)
            elif centre < m < right:
                w[j, i] = (right - m) / (right - centre)
    return w


def ref_spectrogram(x: np.ndarray) -> np.ndarray:
    win, hop, nfft = 400, 160, 512
    hann = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / win) for n in range(win)])
    rows = []
    start = 0
    while start + win <= len(x):
        rows.append(np.abs(np.fft.rfft(x[start:start + win] * hann, nfft)))
        start += hop
    return np.array(rows)


def ref_logmel(x: np.ndarray) -> np.ndarray:
    log_mel = np.log(ref_spectrogram(x) @ ref_mel_matrix() + 0.01)
    examples = [log_mel[i:i + 96] for i in range(0, log_mel.shape[0] - 95, 96)]
    return np.array(examples)[:, None]


def _noise_with_tone(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape[0])


# -------------------------------------------------------------------------------- front end
def test_mel_matrix_matches_loop_reference():
    np.testing.assert_allclose(audio.vggish_mel_matrix(), ref_mel_matrix(), rtol=0, atol=1e-12)
    assert audio.vggish_mel_matrix().shape == (257, 64)


def test_spectrogram_matches_loop_reference():
    x = _noise_with_tone(1.3, seed=1)
    ours = audio.vggish_spectrogram(x)
    ref = ref_spectrogram(x)
    assert ours.shape == ref.shape == (1 + (len(x) - 400) // 160, 257)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)


def test_logmel_matches_reference_and_has_avsbench_shape():
    x = _noise_with_tone(5.0, seed=2)
    ours = audio.vggish_logmel(x)
    assert ours.shape == (5, 1, 96, 64) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref_logmel(x).astype(np.float32), rtol=1e-5, atol=1e-5)
    tensor = audio.avsbench_logmel(x)
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (5, 1, 96, 64)
    np.testing.assert_array_equal(tensor.numpy(), ours)


def test_pure_tone_peaks_in_the_right_mel_band():
    t = np.arange(16000 * 2) / 16000
    for freq in (300.0, 1000.0, 4000.0):
        x = 0.5 * np.sin(2 * np.pi * freq * t)
        band = int(audio.vggish_logmel(x)[0, 0].mean(axis=0).argmax())
        edges = np.linspace(audio.hertz_to_mel(125.0), audio.hertz_to_mel(7500.0), 66)
        centres_hz = 700.0 * (np.exp(edges[1:-1] / 1127.0) - 1.0)
        assert abs(band - int(np.argmin(np.abs(centres_hz - freq)))) <= 1


def test_short_audio_is_padded_by_repeating_last_example_and_long_truncated():
    short = _noise_with_tone(4.5, seed=3)  # 448 frames -> 4 whole examples
    ex = audio.vggish_logmel(short)
    assert ex.shape[0] == 4
    padded = audio.avsbench_logmel(short).numpy()
    np.testing.assert_array_equal(padded[:4], ex)
    np.testing.assert_array_equal(padded[4], ex[3])
    long = _noise_with_tone(7.0, seed=4)
    np.testing.assert_array_equal(audio.avsbench_logmel(long).numpy(), audio.vggish_logmel(long)[:5])
    with pytest.raises(ValueError, match="shorter than one"):
        audio.avsbench_logmel(np.zeros(8000))


def test_other_sample_rates_are_refused():
    with pytest.raises(ValueError, match="44100"):
        audio.vggish_logmel(np.zeros(44100), sr=44100)


# ----------------------------------------------------------------------------------- wav I/O
def test_wav_roundtrip_16bit(tmp_path):
    x = _noise_with_tone(5.0, seed=5)
    path = audio.write_wav(tmp_path / "a" / "clip.wav", x)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 80000, "PCM_16")
    y, sr = audio.read_wav(path)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == (80000,)
    assert np.max(np.abs(y - x)) <= 1.0 / 32768 + 1e-7
    assert not list(tmp_path.glob("a/.*.tmp"))  # atomic write leaves no temporary file


def test_read_wav_averages_channels(tmp_path):
    stereo = np.stack([np.full(1600, 0.5), np.full(1600, -0.25)], axis=1)
    sf.write(str(tmp_path / "s.wav"), stereo, 16000, subtype="PCM_16")
    y, _ = audio.read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(y, 0.125, atol=1e-4)


def test_wav_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.wav"):
        audio.read_wav(tmp_path / "missing.wav")
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="corrupt.wav"):
        audio.read_wav(bad)
    with pytest.raises(ValueError, match="NaN"):
        audio.write_wav(tmp_path / "n.wav", np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="mono"):
        audio.write_wav(tmp_path / "m.wav", np.zeros((10, 2)))


# ------------------------------------------------------------------------------------ pickles
def test_logmel_pickle_is_official_style_and_deterministic(tmp_path):
    t = audio.avsbench_logmel(_noise_with_tone(5.0, seed=6))
    p1 = audio.save_logmel_pickle(tmp_path / "x" / "a.pkl", t)
    p2 = audio.save_logmel_pickle(tmp_path / "x" / "b.pkl", t.clone())
    assert p1.read_bytes() == p2.read_bytes()  # no memory addresses leak into the file
    with open(p1, "rb") as f:
        raw = pickle.load(f)  # what AVSBench's loader does
    assert isinstance(raw, torch.Tensor) and raw.requires_grad and raw.dtype == torch.float32
    assert torch.equal(raw.detach(), t)
    loaded = audio.load_logmel_pickle(p1)
    assert not loaded.requires_grad and torch.equal(loaded, t)


def test_logmel_pickle_plain_pickle_of_a_grad_tensor_loads_too(tmp_path):
    t = torch.zeros(5, 1, 96, 64, requires_grad=True)
    path = tmp_path / "plain.pkl"
    with open(path, "wb") as f:
        pickle.dump(t, f)
    assert torch.equal(audio.load_logmel_pickle(path), torch.zeros(5, 1, 96, 64))


def test_logmel_pickle_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"bad_shape.pkl.*\(5, 1, 96, 64\)"):
        audio.save_logmel_pickle(tmp_path / "bad_shape.pkl", torch.zeros(4, 1, 96, 64))
    wrong = tmp_path / "wrong.pkl"
    with open(wrong, "wb") as f:
        pickle.dump(torch.zeros(3, 1, 96, 64), f)
    with pytest.raises(ValueError, match="wrong.pkl"):
        audio.load_logmel_pickle(wrong)
    notensor = tmp_path / "notensor.pkl"
    with open(notensor, "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(ValueError, match="notensor.pkl.*dict"):
        audio.load_logmel_pickle(notensor)
    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="garbage.pkl"):
        audio.load_logmel_pickle(garbage)
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        audio.load_logmel_pickle(tmp_path / "absent.pkl")
