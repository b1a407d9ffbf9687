"""Visual encoders: presets, feature shapes, offline loading of timm and original-layout checkpoints."""

from __future__ import annotations

import re

import pytest
import timm
import torch

from clavs.models.encoders.lora import apply_lora, lora_parameters
from clavs.models.encoders.visual import VISUAL_PRESETS, WeightsLoadError, create_visual_encoder

SMALL_VIT = dict(patch_size=8, embed_dim=48, depth=3, num_heads=3)


def _small_vit_source(img_size: int = 32, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=img_size, num_classes=10, **SMALL_VIT).eval()


def _timm_to_original_pvt_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename timm PVT-v2 keys to the original whai362 layout (written independently of timm's filter)."""
    out = {}
    for key, value in state_dict.items():
        new = key
        if new.startswith("patch_embed."):
            new = "patch_embed1." + new[len("patch_embed."):]
        m = re.match(r"stages\.(\d+)\.downsample\.(.*)", new)
        if m:
            new = f"patch_embed{int(m.group(1)) + 1}.{m.group(2)}"
        m = re.match(r"stages\.(\d+)\.blocks\.(\d+)\.(.*)", new)
        if m:
            new = f"block{int(m.group(1)) + 1}.{m.group(2)}.{m.group(3)}"
        m = re.match(r"stages\.(\d+)\.norm\.(.*)", new)
        if m:
            new = f"norm{int(m.group(1)) + 1}.{m.group(2)}"
        new = new.replace(".mlp.dwconv.", ".mlp.dwconv.dwconv.")
        out[new] = value
    return out


def test_tiny_preset_shapes_and_attributes():
    torch.manual_seed(0)
    enc = create_visual_encoder("tiny").eval()
    preset = VISUAL_PRESETS["tiny"]
    dim, patch = preset.timm_kwargs["embed_dim"], preset.timm_kwargs["patch_size"]
    grid = preset.img_size // patch
    feats = enc(torch.rand(3, 3, preset.img_size, preset.img_size))
    assert enc.family == "vit"
    assert enc.channels == [dim] * len(preset.out_indices) and enc.reductions == [patch] * len(preset.out_indices)
    assert [tuple(m.shape) for m in feats.maps] == [(3, dim, grid, grid)] * len(preset.out_indices)
    assert feats.tokens.shape == (3, grid * grid, dim) and feats.grid == (grid, grid)
    assert feats.pooled.shape == (3, enc.pooled_dim)
    # the deepest tap of the tokens' block is the un-normalised version of the final tokens
    assert not torch.allclose(feats.maps[-1].flatten(2).transpose(1, 2), feats.tokens)


def test_forward_pooled_matches_forward_and_random_init_is_seeded():
    torch.manual_seed(1)
    a = create_visual_encoder("tiny").eval()
    torch.manual_seed(1)
    b = create_visual_encoder("tiny").eval()
    x = torch.rand(2, 3, 64, 64)
    assert torch.equal(a(x).pooled, b(x).pooled)
    assert torch.equal(a.forward_pooled(x), a(x).pooled)


def test_vit_intermediates_equal_manual_block_loop():
    source = _small_vit_source()
    enc = create_visual_encoder("vit_tiny_patch16_224", img_size=32, out_indices=(0, 2), normalize_input=False,
                                **SMALL_VIT).eval()
    enc.model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("head.")})
    x = torch.randn(2, 3, 32, 32)
    # oracle: run the blocks by hand
    tokens = source._pos_embed(source.patch_embed(x))
    taps = []
    for blk in source.blocks:
        tokens = blk(tokens)
        taps.append(tokens[:, 1:].reshape(2, 4, 4, 48).permute(0, 3, 1, 2))
    feats = enc(x)
    torch.testing.assert_close(feats.maps[0], taps[0])
    torch.testing.assert_close(feats.maps[1], taps[2])
    torch.testing.assert_close(feats.tokens, source.norm(tokens)[:, 1:])


@pytest.mark.parametrize("wrap,suffix", [(None, ".pth"), ("model", ".pth"), (None, ".safetensors")])
def test_vit_checkpoint_from_file_reproduces_source_features(tmp_path, wrap, suffix):
    source = _small_vit_source()
    sd = source.state_dict()  # includes a 10-class head: dropped on load (num_classes=0)
    path = tmp_path / f"vit{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save({wrap: sd} if wrap else sd, path)
    torch.manual_seed(123)  # a different random init: only the file can make the outputs match
    enc = create_visual_encoder("vit_tiny_patch16_224", weights=path, img_size=32, out_indices=(0, 1, 2),
                                normalize_input=False, **SMALL_VIT).eval()
    x = torch.randn(2, 3, 32, 32)
    final, maps = source.forward_intermediates(x, indices=[0, 1, 2], output_fmt="NCHW")
    feats = enc(x)
    for got, want in zip(feats.maps, maps):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(feats.tokens, final[:, 1:])


def test_vit_pos_embed_is_resampled_to_a_new_size(tmp_path):
    source = _small_vit_source(img_size=32)
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    enc = create_visual_encoder("vit_tiny_patch16_224", weights=path, img_size=64, **SMALL_VIT)
    assert enc.model.pos_embed.shape == (1, 1 + 8 * 8, 48)
    torch.testing.assert_close(enc.model.pos_embed[:, :1], source.pos_embed[:, :1])  # class token untouched
    torch.testing.assert_close(enc.model.blocks[1].attn.qkv.weight, source.blocks[1].attn.qkv.weight)
    assert enc(torch.rand(1, 3, 64, 64)).maps[0].shape == (1, 48, 8, 8)


def test_pvt_v2_original_layout_checkpoint_loads_through_the_filter(tmp_path):
    torch.manual_seed(0)
    source = timm.create_model("pvt_v2_b0", num_classes=1000).eval()
    original = _timm_to_original_pvt_keys(source.state_dict())
    assert "patch_embed1.proj.weight" in original and "block1.0.attn.kv.weight" in original
    assert "block2.0.mlp.dwconv.dwconv.weight" in original and "norm4.weight" in original
    assert not any(k.startswith("stages.") for k in original)
    path = tmp_path / "pvt_v2_b0.pth"
    torch.save(original, path)
    torch.manual_seed(99)
    enc = create_visual_encoder("pvt_v2_b0", weights=path, img_size=64, normalize_input=False).eval()
    assert enc.family == "pvt_v2"
    assert enc.channels == [32, 64, 160, 256] and enc.reductions == [4, 8, 16, 32]
    x = torch.randn(2, 3, 64, 64)
    want = source.forward_intermediates(x, output_fmt="NCHW", intermediates_only=True)
    feats = enc(x)
    for got, ref in zip(feats.maps, want):
        torch.testing.assert_close(got, ref)
    assert feats.grid == (2, 2)
    torch.testing.assert_close(feats.tokens, want[-1].flatten(2).transpose(1, 2))
    torch.testing.assert_close(feats.pooled, source.forward_head(source.forward_features(x), pre_logits=True))


def test_hub_weights_offline_fail_fast_with_instructions():
    with pytest.raises(WeightsLoadError, match=r"weights=<file>"):
        create_visual_encoder("vit_tiny_patch16_224", weights="hub", img_size=32)
    with pytest.raises(WeightsLoadError, match="no hub weights"):
        create_visual_encoder("tiny", weights="hub")


def test_bad_weights_and_names_give_clear_errors(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_visual_encoder("tiny", weights=missing)
    shallow = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0, **{**SMALL_VIT, "depth": 2})
    path = tmp_path / "shallow.pth"
    torch.save(shallow.state_dict(), path)
    with pytest.raises(WeightsLoadError, match=r"shallow\.pth.*missing key.*blocks\.2\."):
        create_visual_encoder("vit_tiny_patch16_224", weights=path, img_size=32, **SMALL_VIT)
    wrong_width = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0,
                                    **{**SMALL_VIT, "embed_dim": 24})
    torch.save(wrong_width.state_dict(), path)
    with pytest.raises(WeightsLoadError, match=r"shallow\.pth"):
        create_visual_encoder("vit_tiny_patch16_224", weights=path, img_size=32, **SMALL_VIT)
    with pytest.raises(ValueError, match="unknown visual encoder 'resnet_9000'"):
        create_visual_encoder("resnet_9000")
    with pytest.raises(ValueError, match="out_indices"):
        create_visual_encoder("tiny", out_indices=(0, 7))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        create_visual_encoder("tiny")(torch.rand(2, 1, 64, 64))


def test_input_normalisation_uses_model_mean_std():
    torch.manual_seed(0)
    enc = create_visual_encoder("tiny").eval()
    raw = create_visual_encoder("tiny", normalize_input=False).eval()
    raw.load_state_dict(enc.state_dict())
    x = torch.rand(2, 3, 64, 64)
    # the tiny preset declares its own (ImageNet) statistics: it is pretrained by `clavs pretrain`
    mean = torch.tensor(VISUAL_PRESETS["tiny"].mean).view(1, 3, 1, 1)
    std = torch.tensor(VISUAL_PRESETS["tiny"].std).view(1, 3, 1, 1)
    torch.testing.assert_close(enc(x).tokens, raw((x - mean) / std).tokens)
    # a plain timm name uses the model's own pretrained_cfg statistics
    timm_enc = create_visual_encoder("vit_tiny_patch16_224", img_size=32, depth=1).eval()
    timm_raw = create_visual_encoder("vit_tiny_patch16_224", img_size=32, depth=1, normalize_input=False).eval()
    timm_raw.load_state_dict(timm_enc.state_dict())
    y = torch.rand(2, 3, 32, 32)
    m = torch.tensor(timm_enc.model.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    sd = torch.tensor(timm_enc.model.pretrained_cfg["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(timm_enc(y).tokens, timm_raw((y - m) / sd).tokens)


def test_save_backbone_merges_lora_and_reloads(tmp_path):
    torch.manual_seed(0)
    enc = create_visual_encoder("tiny").eval()
    apply_lora(enc, targets=("qkv",), r=4, alpha=8)
    with torch.no_grad():
        for p in lora_parameters(enc):
            p.normal_(std=0.2)
    x = torch.rand(2, 3, 64, 64)
    adapted = enc(x)
    path = enc.save_backbone(tmp_path / "tiny.pth")
    assert not any("lora" in k for k in torch.load(path, weights_only=True))
    reloaded = create_visual_encoder("tiny", weights=path).eval()
    torch.testing.assert_close(reloaded(x).tokens, adapted.tokens, rtol=1e-4, atol=1e-5)


def test_vit_prefix_tokens_attend_and_are_dropped_from_every_output():
    source = _small_vit_source()
    enc = create_visual_encoder("vit_tiny_patch16_224", img_size=32, out_indices=(0, 2), normalize_input=False,
                                **SMALL_VIT).eval()
    enc.model.load_state_dict({k: v for k, v in source.state_dict().items() if not k.startswith("head.")})
    x = torch.randn(2, 3, 32, 32)
    plain = enc(x)
    empty = enc(x, prefix_tokens=x.new_zeros(2, 0, 48))  # the prompted path without prompts: timm's forward
    assert all(torch.equal(a, b) for a, b in zip(plain.maps, empty.maps))
    assert torch.equal(plain.tokens, empty.tokens) and torch.equal(plain.pooled, empty.pooled)

    prompts = torch.randn(2, 5, 48)
    feats = enc(x, prefix_tokens=prompts)
    # oracle: [cls, prompts, patches] through the blocks by hand, prompts cut from every output
    tokens = source._pos_embed(source.patch_embed(x))
    tokens = torch.cat([tokens[:, :1], prompts, tokens[:, 1:]], dim=1)
    taps = []
    for blk in source.blocks:
        tokens = blk(tokens)
        taps.append(tokens[:, 6:].reshape(2, 4, 4, 48).permute(0, 3, 1, 2))
    assert [tuple(m.shape) for m in feats.maps] == [(2, 48, 4, 4)] * 2 and feats.grid == (4, 4)
    torch.testing.assert_close(feats.maps[0], taps[0])
    torch.testing.assert_close(feats.maps[1], taps[2])
    torch.testing.assert_close(feats.tokens, source.norm(tokens)[:, 6:])
    torch.testing.assert_close(feats.pooled, source.norm(tokens)[:, 0])
    assert not torch.allclose(feats.tokens, plain.tokens)  # the patches attended to the prompts
    with pytest.raises(ValueError, match=r"prefix_tokens must be \[B=2, P, C=48\]"):
        enc(x, prefix_tokens=torch.randn(2, 5, 7))
    pvt = create_visual_encoder("pvt_v2_b0", img_size=32).eval()
    with pytest.raises(ValueError, match="prefix tokens .* need a ViT encoder; pvt_v2_b0"):
        pvt(torch.rand(1, 3, 32, 32), prefix_tokens=torch.randn(1, 5, 32))
