"""Tests for the tiny CPU audio encoder."""

from __future__ import annotations

import pytest
import torch

from clavs.models.encoders.audio_tiny import TinyAudioCNN


def _wave(n: int, samples: int = 16000, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(n, samples, generator=g)


def _model(seed: int = 0, **kwargs) -> TinyAudioCNN:
    torch.manual_seed(seed)
    return TinyAudioCNN(**kwargs)


def test_shapes_with_and_without_head():
    enc = _model()
    assert enc.embed_dim == 128 and enc.sample_rate == 16000 and enc.head is None
    emb = enc.embed(_wave(5))
    assert emb.shape == (5, 128) and emb.dtype == torch.float32
    out = enc(_wave(3))
    assert set(out) == {"embedding"}

    clf = _model(embed_dim=48, channels=(8, 16, 24), num_classes=7)
    out = clf(_wave(4))
    assert out["embedding"].shape == (4, 48) and out["logits"].shape == (4, 7)
    assert clf.embed(_wave(2)).shape == (2, 48)


def test_same_seed_same_model_and_embeddings():
    a, b = _model(seed=3), _model(seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb), ka
    wave = _wave(4, seed=1)
    ea = a.embed(wave)
    assert torch.equal(ea, b.embed(wave))
    assert torch.equal(ea, a.embed(wave))  # repeated calls are identical
    c = _model(seed=4)
    assert not torch.equal(ea, c.embed(wave))


def test_embed_is_batch_independent_and_restores_mode():
    enc = _model(num_classes=3).train()
    wave = _wave(4, seed=2)
    full = enc.embed(wave)
    assert enc.training and not full.requires_grad
    for i in range(4):
        torch.testing.assert_close(enc.embed(wave[i : i + 1]), full[i : i + 1], atol=1e-5, rtol=1e-5)


def test_pretraining_forward_backward_reaches_all_trainable_layers():
    enc = _model(num_classes=5).train()
    out = enc(_wave(6, seed=4))
    loss = torch.nn.functional.cross_entropy(out["logits"], torch.tensor([0, 1, 2, 3, 4, 0]))
    loss.backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The log-mel front end holds only non-persistent constants.
    assert not any(k.startswith("front_end") for k in enc.state_dict())


def test_front_end_stays_fp32_under_bf16_autocast():
    enc = _model().eval()
    wave = _wave(2, seed=5)
    seen = {}
    enc.front_end.register_forward_hook(lambda mod, inp, out: seen.__setitem__("dtype", out.dtype))
    with torch.no_grad():
        ref_mel = enc.front_end(wave)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mel = enc.front_end(wave)
            emb = enc.embed(wave)
    assert mel.dtype == torch.float32 and seen["dtype"] == torch.float32
    assert torch.equal(mel, ref_mel)
    assert emb.shape == (2, 128)
    # The conv layers do run in bf16, so the embedding is close to, not equal to, the fp32 one.
    fp32 = enc.embed(wave)
    assert (emb.float() - fp32).abs().max() <= 0.1 * fp32.abs().max() + 1e-3


def test_minimum_length_and_bad_input():
    enc = _model()
    n = enc.min_samples
    assert n == 15 * 160  # 16 frames survive four 2x poolings
    assert enc.embed(_wave(1, n)).shape == (1, 128)
    with pytest.raises(ValueError, match=f"length {n - 1} samples"):
        enc.embed(_wave(1, n - 1))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        enc.embed(torch.zeros(16000))
    with pytest.raises(ValueError, match="num_classes"):
        TinyAudioCNN(num_classes=0)
    with pytest.raises(ValueError, match="n_mels=8"):
        TinyAudioCNN(n_mels=8)


def test_minimum_length_is_tight_for_the_network():
    # min_samples gives 16 frames, which survive four 2x poolings; one sample fewer gives
    # 15 frames, and the unguarded layers fail in the last pooling.
    enc = _model().eval()
    n = enc.min_samples

    def run_layers(samples: int) -> torch.Tensor:
        x = enc.front_end(_wave(1, samples))
        for block in enc.blocks:
            x = block(x)
        return x

    with torch.no_grad():
        assert run_layers(n).shape[2] == 1
        with pytest.raises(RuntimeError):
            run_layers(n - 1)


def test_checkpoint_round_trip(tmp_path):
    enc = _model(seed=7, embed_dim=32, channels=(8, 16, 16), num_classes=4, dropout=0.3)
    # Move BN statistics off their defaults so the round trip is a real check.
    enc.train()
    with torch.no_grad():
        enc(_wave(8, seed=8))
    path = enc.save_checkpoint(tmp_path / "sub" / "tiny.pt", extra={"seed": 7, "classes": ["a", "b"]})
    raw = torch.load(path, weights_only=True)
    assert raw["seed"] == 7 and raw["config"]["channels"] == [8, 16, 16]
    loaded = TinyAudioCNN.from_checkpoint(path)
    assert not loaded.training and loaded.embed_dim == 32 and loaded.num_classes == 4
    wave = _wave(3, seed=9)
    assert torch.equal(loaded.embed(wave), enc.embed(wave))
    assert not list(tmp_path.joinpath("sub").glob("*.tmp"))  # atomic write left no temp file


def test_checkpoint_errors_name_file_and_keys(tmp_path):
    enc = _model(channels=(8, 16, 16))
    path = enc.save_checkpoint(tmp_path / "tiny.pt")
    raw = torch.load(path, weights_only=True)
    del raw["model"]["blocks.1.bn.running_mean"]
    torch.save(raw, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match=r"broken\.pt.*missing keys: \['blocks\.1\.bn\.running_mean'\]"):
        TinyAudioCNN.from_checkpoint(tmp_path / "broken.pt")
    torch.save(enc.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(ValueError, match=r"bare\.pt.*clavs\.TinyAudioCNN/1"):
        TinyAudioCNN.from_checkpoint(tmp_path / "bare.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        TinyAudioCNN.from_checkpoint(tmp_path / "absent.pt")
