"""Tests for the log-mel front end and the PANNs Cnn14 encoder.

The oracles are written independently inside this file:
* a loop-based Slaney mel filterbank (and librosa when it happens to be installed);
* the original torchlibrosa-style front end (DFT matrices as conv1d weights);
* an original-architecture Cnn14 with the exact 84-key official state_dict layout.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clavs.models.encoders import cnn14 as cnn14_mod
from clavs.models.encoders.cnn14 import (
    CNN14_CHANNELS,
    CNN14_FRONT_END,
    CheckpointError,
    Cnn14,
    resample_audio,
)
from clavs.models.encoders.logmel import LogMelFrontEnd, slaney_mel_filterbank

SMALL_CHANNELS = (4, 8, 8, 16, 16, 32)


# ---------------------------------------------------------------------------------------------
# Independent oracles


def _hz_to_mel(f: float) -> float:
    # Slaney: 200/3 Hz per mel up to 1 kHz, then 27 mels per factor 6.4.
    if f < 1000.0:
        return 3.0 * f / 200.0
    return 15.0 + 27.0 * math.log(f / 1000.0) / math.log(6.4)


def _mel_to_hz(m: float) -> float:
    if m < 15.0:
        return 200.0 * m / 3.0
    return 1000.0 * 6.4 ** ((m - 15.0) / 27.0)


def loop_slaney_filterbank(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Triangles between consecutive mel-spaced edges, each scaled to 2 / (bandwidth in Hz)."""
    lo, hi = _hz_to_mel(fmin), _hz_to_mel(fmax)
    edges = [_mel_to_hz(lo + (hi - lo) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    n_bins = n_fft // 2 + 1
    fb = np.zeros((n_bins, n_mels))
    for m in range(n_mels):
        left, centre, right = edges[m], edges[m + 1], edges[m + 2]
        for k in range(n_bins):
            f = k * sr / n_fft
            if left <= f <= centre:
                w = (f - left) / (centre - left)
            elif centre < f <= right:
                w = (right - f) / (right - centre)
            else:
                w = 0.0
            fb[k, m] = w * 2.0 / (right - left)
    return fb


def conv_dft_weights(n_fft: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torchlibrosa-style STFT kernels: windowed DFT rows as conv1d weights [bins, 1, n_fft]."""
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann
    k = np.arange(n_fft // 2 + 1)
    angle = 2.0 * np.pi * np.outer(k, n) / n_fft
    real = np.cos(angle) * window[None, :]
    imag = -np.sin(angle) * window[None, :]
    return torch.from_numpy(real)[:, None, :], torch.from_numpy(imag)[:, None, :]


def conv_log_mel(wave: torch.Tensor, sr: int, n_fft: int, hop: int, fb: np.ndarray) -> torch.Tensor:
    """Original PANNs front end in float64: reflect pad, conv STFT, power, mel, 10log10."""
    real_w, imag_w = conv_dft_weights(n_fft)
    x = F.pad(wave.double()[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
    power = F.conv1d(x, real_w, stride=hop) ** 2 + F.conv1d(x, imag_w, stride=hop) ** 2
    mel = power.transpose(1, 2) @ torch.from_numpy(fb)
    return (10.0 * torch.log10(mel.clamp(min=1e-10)))[:, None]


class _RefStft(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.conv_real = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        self.conv_imag = nn.Conv1d(1, n_fft // 2 + 1, n_fft, stride=hop, bias=False)
        real, imag = conv_dft_weights(n_fft)
        with torch.no_grad():
            self.conv_real.weight.copy_(real.float())
            self.conv_imag.weight.copy_(imag.float())
        for p in self.parameters():
            p.requires_grad = False


class _RefSpectrogram(nn.Module):
    def __init__(self, n_fft: int, hop: int) -> None:
        super().__init__()
        self.stft = _RefStft(n_fft, hop)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = F.pad(wave[:, None, :], (self.stft.n_fft // 2, self.stft.n_fft // 2), mode="reflect")
        real = self.stft.conv_real(x)[:, None].transpose(2, 3)
        imag = self.stft.conv_imag(x)[:, None].transpose(2, 3)
        return real**2 + imag**2


class _RefLogmel(nn.Module):
    def __init__(self, fb: np.ndarray) -> None:
        super().__init__()
        self.melW = nn.Parameter(torch.from_numpy(fb).float(), requires_grad=False)

    def forward(self, power: torch.Tensor) -> torch.Tensor:
        return 10.0 * torch.log10(torch.clamp(power @ self.melW, min=1e-10))


class _RefBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.bn2 = nn.BatchNorm2d(cout)


class RefCnn14(nn.Module):
    """Original-architecture Cnn14 (conv STFT front end), evaluation path only."""

    def __init__(self, sample_rate: int, channels=CNN14_CHANNELS, classes_num: int = 527, fb=None) -> None:
        super().__init__()
        cfg = CNN14_FRONT_END[sample_rate]
        n_fft, hop = int(cfg["n_fft"]), int(cfg["hop"])
        if fb is None:
            fb = loop_slaney_filterbank(sample_rate, n_fft, 64, cfg["fmin"], cfg["fmax"])
        self.spectrogram_extractor = _RefSpectrogram(n_fft, hop)
        self.logmel_extractor = _RefLogmel(fb)
        self.bn0 = nn.BatchNorm2d(64)
        chans = (1,) + tuple(channels)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", _RefBlock(chans[i], chans[i + 1]))
        self.fc1 = nn.Linear(chans[-1], chans[-1])
        self.fc_audioset = nn.Linear(chans[-1], classes_num)

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.logmel_extractor(self.spectrogram_extractor(wave))
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i in range(1, 7):
            b = getattr(self, f"conv_block{i}")
            x = F.relu_(b.bn1(b.conv1(x)))
            x = F.relu_(b.bn2(b.conv2(x)))
            x = F.avg_pool2d(x, kernel_size=(2, 2) if i < 6 else (1, 1))
        x = torch.mean(x, dim=3)
        x = torch.max(x, dim=2)[0] + torch.mean(x, dim=2)
        emb = F.relu_(self.fc1(x))
        return {"clipwise_output": torch.sigmoid(self.fc_audioset(emb)), "embedding": emb}


def randomise(model: RefCnn14, seed: int) -> RefCnn14:
    """Random trainable weights and BN statistics; the frozen front-end constants stay exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                fan_in = mod.weight[0].numel()
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * math.sqrt(2.0 / fan_in))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, nn.BatchNorm2d):
                n = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(n, generator=g))
                mod.bias.copy_(torch.randn(n, generator=g) * 0.1)
                if name == "bn0":  # log-mel in dB: realistic centre and spread
                    mod.running_mean.copy_(-40.0 + 5.0 * torch.randn(n, generator=g))
                    mod.running_var.copy_(50.0 + 100.0 * torch.rand(n, generator=g))
                else:
                    mod.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                    mod.running_var.copy_(0.5 + torch.rand(n, generator=g))
                mod.num_batches_tracked.fill_(int(torch.randint(1, 10**6, (1,), generator=g)))
    return model.eval()


def _wave(n: int, samples: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, samples, generator=g)


# ---------------------------------------------------------------------------------------------
# Filterbank and front end


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax",
    [(32000, 1024, 64, 50.0, 14000.0), (16000, 512, 64, 50.0, 8000.0), (22050, 2048, 128, 0.0, 11025.0)],
)
def test_filterbank_matches_loop_oracle(sr, n_fft, n_mels, fmin, fmax):
    fb = slaney_mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
    assert fb.shape == (n_fft // 2 + 1, n_mels)
    np.testing.assert_allclose(fb, loop_slaney_filterbank(sr, n_fft, n_mels, fmin, fmax), rtol=1e-9, atol=1e-12)
    assert (fb.sum(axis=0) > 0).all()  # no empty band


@pytest.mark.skipif(importlib.util.find_spec("librosa") is None, reason="librosa not installed (optional)")
def test_filterbank_matches_librosa():
    import librosa

    for sr, cfg in CNN14_FRONT_END.items():
        ref = librosa.filters.mel(
            sr=sr, n_fft=int(cfg["n_fft"]), n_mels=64, fmin=cfg["fmin"], fmax=cfg["fmax"], htk=False, norm="slaney"
        ).T
        np.testing.assert_allclose(slaney_mel_filterbank(sr, int(cfg["n_fft"]), 64, cfg["fmin"], cfg["fmax"]), ref, atol=1e-7)


def test_filterbank_rejects_bad_band():
    with pytest.raises(ValueError, match="fmax=20000"):
        slaney_mel_filterbank(32000, 1024, 64, 50.0, 20000.0)


@pytest.mark.parametrize("sr", [32000, 16000])
@pytest.mark.parametrize("samples", [12345, 32000])
def test_front_end_matches_conv_stft(sr, samples):
    cfg = CNN14_FRONT_END[sr]
    n_fft, hop = int(cfg["n_fft"]), int(cfg["hop"])
    fe = LogMelFrontEnd(sr, n_fft=n_fft, hop=hop, n_mels=64, fmin=cfg["fmin"], fmax=cfg["fmax"])
    wave = _wave(3, samples, seed=samples)
    ours = fe(wave)
    assert ours.shape == (3, 1, 1 + samples // hop, 64)
    assert ours.dtype == torch.float32
    ref = conv_log_mel(wave, sr, n_fft, hop, loop_slaney_filterbank(sr, n_fft, 64, cfg["fmin"], cfg["fmax"]))
    assert (ours.double() - ref).abs().max().item() < 1e-3


def test_front_end_adds_no_state_dict_keys_and_ignores_autocast():
    fe = LogMelFrontEnd(32000)
    assert list(fe.state_dict()) == [] and list(fe.parameters()) == []
    wave = _wave(2, 8000, seed=1)
    plain = fe(wave)
    plain_rounded = fe(wave.to(torch.bfloat16).float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = fe(wave)
        auto_bf16_in = fe(wave.to(torch.bfloat16))  # a bf16 input is upcast, not computed in bf16
    assert auto.dtype == torch.float32 and auto_bf16_in.dtype == torch.float32
    assert torch.equal(auto, plain)
    assert torch.equal(auto_bf16_in, plain_rounded)


def test_front_end_rejects_bad_shapes():
    fe = LogMelFrontEnd(32000)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        fe(torch.zeros(1000))
    with pytest.raises(ValueError, match="100 samples"):
        fe(torch.zeros(1, 100))


# ---------------------------------------------------------------------------------------------
# Architecture and key layout at the true size (no forward pass: meta tensors)


@pytest.mark.parametrize("sr", [32000, 16000])
def test_full_size_key_layout_matches_official(sr):
    n_fft = int(CNN14_FRONT_END[sr]["n_fft"])
    with torch.device("meta"):
        ref = RefCnn14(sr, fb=np.zeros((n_fft // 2 + 1, 64)))
        ours = Cnn14(sample_rate=sr)
    ref_sd, our_sd = ref.state_dict(), ours.state_dict()
    assert len(ref_sd) == 84
    assert ref_sd["spectrogram_extractor.stft.conv_real.weight"].shape == (n_fft // 2 + 1, 1, n_fft)
    assert ref_sd["logmel_extractor.melW"].shape == (n_fft // 2 + 1, 64)
    front = {k for k in ref_sd if k.startswith(("spectrogram_extractor.", "logmel_extractor."))}
    assert len(front) == 3
    assert set(our_sd) == set(ref_sd) - front
    for key, value in our_sd.items():
        assert value.shape == ref_sd[key].shape, key
    # Parameter count of the official model without its frozen STFT/mel constants.
    assert sum(p.numel() for p in ours.parameters()) == 80_753_615
    assert ours.embed_dim == 2048


# ---------------------------------------------------------------------------------------------
# Loading official-layout checkpoints


def _save(tmp_path, name, obj):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("sr", [32000, 16000])
def test_from_checkpoint_reproduces_reference_embedding(tmp_path, sr):
    ref = randomise(RefCnn14(sr, channels=SMALL_CHANNELS, classes_num=11), seed=sr)
    wave = _wave(3, sr + 777, seed=7)
    with torch.no_grad():
        expected = ref(wave)
    sd = ref.state_dict()
    wrapped = _save(tmp_path, "wrapped.pth", {"model": sd})
    bare = _save(tmp_path, "bare.pth", sd)
    for path in (wrapped, bare):
        model = Cnn14.from_checkpoint(path, sample_rate=sr, channels=SMALL_CHANNELS, classes_num=11)
        emb = model.embed(wave)
        assert emb.shape == (3, SMALL_CHANNELS[-1]) and model.embed_dim == SMALL_CHANNELS[-1]
        scale = expected["embedding"].abs().max().item()
        assert scale > 0.1  # the comparison is not between two near-zero tensors
        torch.testing.assert_close(emb, expected["embedding"], atol=1e-4 * scale, rtol=1e-4)
        with torch.no_grad():
            out = model(wave)
        torch.testing.assert_close(out["clipwise_output"], expected["clipwise_output"], atol=1e-4, rtol=1e-4)


def test_embed_is_eval_no_grad_and_restores_mode():
    torch.manual_seed(0)
    model = Cnn14(sample_rate=16000, channels=SMALL_CHANNELS, classes_num=5).train()
    wave = _wave(2, 16000, seed=3)
    a = model.embed(wave)
    assert model.training and not a.requires_grad
    b = model.embed(wave)
    assert torch.equal(a, b)  # eval mode: no dropout, running BN statistics
    # Embeddings of one clip do not depend on the rest of the batch in eval mode.
    torch.testing.assert_close(model.embed(wave[1:]), a[1:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sr", [32000, 16000])
def test_minimum_length_is_exact(sr):
    ref = randomise(RefCnn14(sr, channels=SMALL_CHANNELS, classes_num=3), seed=1)
    model = Cnn14(sample_rate=sr, channels=SMALL_CHANNELS, classes_num=3)
    n = model.min_samples
    assert n == 31 * int(CNN14_FRONT_END[sr]["hop"])  # 9920 samples = 0.31 s at 32 kHz
    assert model.embed(_wave(1, n, 0)).shape == (1, SMALL_CHANNELS[-1])
    with torch.no_grad():
        ref(_wave(1, n, 0))  # the original architecture accepts it ...
        with pytest.raises(RuntimeError):
            ref(_wave(1, n - 1, 0))  # ... and fails one sample shorter
    with pytest.raises(ValueError, match=f"length {n - 1} samples"):
        model.embed(_wave(1, n - 1, 0))


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = randomise(RefCnn14(32000, channels=SMALL_CHANNELS, classes_num=7), seed=2).state_dict()
    missing = dict(sd)
    del missing["conv_block3.bn2.running_var"]
    path = _save(tmp_path, "missing.pth", {"model": missing})
    with pytest.raises(CheckpointError, match=r"missing keys: \['conv_block3.bn2.running_var'\]") as info:
        Cnn14.from_checkpoint(path, channels=SMALL_CHANNELS, classes_num=7)
    assert "missing.pth" in str(info.value)

    extra = dict(sd)
    extra["conv_block7.conv1.weight"] = torch.zeros(1)
    path = _save(tmp_path, "extra.pth", {"model": extra})
    with pytest.raises(CheckpointError, match=r"unexpected keys: \['conv_block7.conv1.weight'\]") as info:
        Cnn14.from_checkpoint(path, channels=SMALL_CHANNELS, classes_num=7)
    assert "extra.pth" in str(info.value)


def test_shape_and_sample_rate_mismatches_are_named(tmp_path):
    sd16 = randomise(RefCnn14(16000, channels=SMALL_CHANNELS, classes_num=7), seed=3).state_dict()
    path = _save(tmp_path, "cnn14_16k.pth", {"model": sd16})
    with pytest.raises(CheckpointError, match=r"cnn14_16k\.pth.*conv_real\.weight has shape \(257, 1, 512\)"):
        Cnn14.from_checkpoint(path, sample_rate=32000, channels=SMALL_CHANNELS, classes_num=7)
    with pytest.raises(CheckpointError, match=r"shape mismatch for .*fc_audioset\.weight"):
        Cnn14.from_checkpoint(path, sample_rate=16000, channels=SMALL_CHANNELS, classes_num=527)
    # Same shapes, different band edges: the mel matrix values give it away.
    wrong_fb = loop_slaney_filterbank(32000, 1024, 64, 50.0, 16000.0)
    sd32 = randomise(RefCnn14(32000, channels=SMALL_CHANNELS, classes_num=7, fb=wrong_fb), seed=4).state_dict()
    path = _save(tmp_path, "fmax16k.pth", sd32)
    with pytest.raises(CheckpointError, match="logmel_extractor.melW differs"):
        Cnn14.from_checkpoint(path, sample_rate=32000, channels=SMALL_CHANNELS, classes_num=7)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        Cnn14.from_checkpoint(tmp_path / "nope.pth")
    path = _save(tmp_path, "odd.pth", {"epoch": 3, "weights": [1, 2]})
    with pytest.raises(CheckpointError, match=r"odd\.pth.*\['epoch', 'weights'\]"):
        Cnn14.from_checkpoint(path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"garbage\.pth: not a readable torch checkpoint"):
        Cnn14.from_checkpoint(garbage)


def test_dataparallel_prefix_is_stripped(tmp_path):
    ref = randomise(RefCnn14(16000, channels=SMALL_CHANNELS, classes_num=4), seed=5)
    path = _save(tmp_path, "dp.pth", {"model": {f"module.{k}": v for k, v in ref.state_dict().items()}})
    model = Cnn14.from_checkpoint(path, sample_rate=16000, channels=SMALL_CHANNELS, classes_num=4)
    wave = _wave(2, 16000, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(wave), ref(wave)["embedding"], atol=1e-4, rtol=1e-4)


def _numpy_checkpoint(tmp_path, ref):
    sampler = {
        "indexes_per_class": [np.arange(10, dtype=np.int64), np.arange(3, dtype=np.int32)],
        "queue": [1, 5, 2],
        "pointers_of_classes": [0, 2],
    }
    return _save(tmp_path, "with_sampler.pth", {"iteration": 140000, "model": ref.state_dict(), "sampler": sampler})


def test_numpy_sampler_checkpoint_needs_opt_in(tmp_path):
    ref = randomise(RefCnn14(16000, channels=SMALL_CHANNELS, classes_num=6), seed=6)
    path = _numpy_checkpoint(tmp_path, ref)
    with pytest.raises(CheckpointError, match=r"with_sampler\.pth.*numpy\..*allow_unsafe_globals=True"):
        Cnn14.from_checkpoint(path, sample_rate=16000, channels=SMALL_CHANNELS, classes_num=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the allowlist alone must be enough
        model = Cnn14.from_checkpoint(
            path, sample_rate=16000, channels=SMALL_CHANNELS, classes_num=6, allow_unsafe_globals=True
        )
    wave = _wave(2, 16000, seed=11)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(wave), ref(wave)["embedding"], atol=1e-4, rtol=1e-4)


def test_unsafe_opt_in_falls_back_to_full_unpickling(tmp_path, monkeypatch):
    ref = randomise(RefCnn14(16000, channels=SMALL_CHANNELS, classes_num=6), seed=8)
    path = _numpy_checkpoint(tmp_path, ref)
    # Without numpy's dtype classes the allowlisted weights_only load fails, forcing the last resort.
    monkeypatch.setattr(cnn14_mod, "_numpy_dtype_classes", lambda: [])
    with pytest.warns(RuntimeWarning, match="weights_only=False"):
        model = Cnn14.from_checkpoint(
            path, sample_rate=16000, channels=SMALL_CHANNELS, classes_num=6, allow_unsafe_globals=True
        )
    wave = _wave(1, 16000, seed=12)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(wave), ref(wave)["embedding"], atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("sr", [32000, 16000])
def test_full_size_checkpoint_round_trip(tmp_path, sr):
    ref = randomise(RefCnn14(sr), seed=0)
    path = _save(tmp_path, "full.pth", {"model": ref.state_dict()})
    model = Cnn14.from_checkpoint(path, sample_rate=sr)
    wave = _wave(2, sr, seed=0)
    with torch.no_grad():
        expected = ref(wave)["embedding"]
    emb = model.embed(wave)
    assert emb.shape == (2, 2048)
    torch.testing.assert_close(emb, expected, atol=1e-4 * expected.abs().max().item(), rtol=1e-3)


def test_constructor_validation():
    with pytest.raises(ValueError, match="44100"):
        Cnn14(sample_rate=44100)
    with pytest.raises(ValueError, match="6 positive"):
        Cnn14(channels=(4, 8))
    model = Cnn14(sample_rate=16000, channels=SMALL_CHANNELS)
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        model.embed(torch.zeros(3, 1, 16000))


# ---------------------------------------------------------------------------------------------
# Resampling


@pytest.mark.parametrize("orig,new", [(16000, 32000), (32000, 16000), (44100, 32000)])
def test_resample_preserves_in_band_tone(orig, new):
    freq = 440.0
    seconds = 0.5
    t_in = torch.arange(int(orig * seconds), dtype=torch.float64) / orig
    wave = torch.sin(2 * math.pi * freq * t_in).float()[None]
    out = resample_audio(wave, orig, new)
    assert out.shape == (1, math.ceil(wave.shape[1] * new / orig)) and out.dtype == torch.float32
    t_out = torch.arange(out.shape[1], dtype=torch.float64) / new
    expected = torch.sin(2 * math.pi * freq * t_out)
    interior = slice(200, out.shape[1] - 200)  # zero padding attenuates the edges
    assert (out[0, interior].double() - expected[interior]).abs().max().item() < 2e-3


def test_resample_removes_content_above_new_nyquist():
    orig, new = 32000, 16000
    t = torch.arange(orig, dtype=torch.float64) / orig
    tone = torch.sin(2 * math.pi * 10000.0 * t)[None]  # above 8 kHz: would alias to 6 kHz
    out = resample_audio(tone, orig, new)
    assert out[0, 200:-200].abs().max().item() < 0.02
    with pytest.raises(ValueError, match="orig_sr=0"):
        resample_audio(tone, 0, new)
