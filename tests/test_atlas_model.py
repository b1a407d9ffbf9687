"""The ATLAS network: shapes, identity conditioning at init, trainable groups, class-head growth."""

from __future__ import annotations

import pytest
import torch

from clavs.models.architectures.atlas import PARAMETER_GROUPS, AtlasNet, AtlasNetConfig
from helpers import av_batch
from clavs.models.encoders.lora import LoRAConv2d, LoRASlicedLinear, merge_lora

B, T, H, W, DA = 2, 5, 64, 64, 24


def _net(seed: int = 0, **overrides) -> AtlasNet:
    torch.manual_seed(seed)
    cfg = AtlasNetConfig(**{"audio_dim": DA, "dim": 32, "num_heads": 4, "decoder_dim": 32, "num_classes": 4,
                            **overrides})
    return AtlasNet(cfg)


def _inputs(seed: int = 0, b: int = B) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, T, 3, H, W, generator=g), torch.randn(b, T, DA, generator=g)


def _perturb(params, seed: int = 5, std: float = 0.2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(torch.randn(p.shape, generator=g) * std)


def test_output_shapes_at_64_with_five_frames():
    net = _net().eval()
    frames, audio = _inputs()
    out = net(av_batch(frames, audio))
    n = B * T
    grid = net.visual.img_size // net.visual.token_reduction
    assert out.mask_logits.shape == (n, 1, H, W)
    assert out.class_logits.shape == (n, 4)
    f = out.features
    assert f["visual_tokens"].shape == (n, grid * grid, net.visual.token_dim)
    assert f["conditioned"].shape == f["visual_tokens"].shape
    assert f["fused"].shape == (n, grid * grid, 32) and f["pooled"].shape == (n, 32)
    assert f["audio"].shape == (B, T, 32) and f["grid"] == (grid, grid)
    assert len(f["visual_maps"]) == len(net.visual.channels)
    torch.testing.assert_close(f["pooled"], f["fused"].mean(1))


def test_no_class_logits_without_classes_or_head():
    frames, audio = _inputs()
    assert _net(num_classes=0).eval()(av_batch(frames, audio)).class_logits is None
    net = _net(use_class_head=False, num_classes=3)
    assert net.eval()(av_batch(frames, audio)).class_logits is None
    with pytest.raises(ValueError, match="use_class_head=False"):
        net.add_classes(2)


def test_pre_conditioning_is_identity_at_init_and_switch_changes_parameters():
    on, off = _net(pre_conditioning=True).eval(), _net(pre_conditioning=False).eval()
    sd = {k: v for k, v in on.state_dict().items() if not k.startswith("conditioning.")}
    off.load_state_dict(sd, strict=True)
    names_on = {n for n, _ in on.named_parameters()}
    names_off = {n for n, _ in off.named_parameters()}
    assert names_on - names_off == {n for n, _ in on.named_parameter_groups()["conditioning"]} != set()
    assert names_off <= names_on and off.named_parameter_groups()["conditioning"] == []
    frames, audio = _inputs()
    out_on, out_off = on(av_batch(frames, audio)), off(av_batch(frames, audio))
    assert torch.equal(out_on.features["conditioned"], out_on.features["visual_tokens"])
    assert torch.equal(out_on.mask_logits, out_off.mask_logits)
    assert torch.equal(out_on.class_logits, out_off.class_logits)
    # once the last layer moves away from zero, the audio does modulate the tokens
    _perturb(on.conditioning.mlp[-1].parameters())
    assert not torch.allclose(on(av_batch(frames, audio)).mask_logits, out_off.mask_logits)


def test_parameter_groups_partition_the_model_and_only_the_base_encoder_is_frozen():
    net = _net()
    groups = net.named_parameter_groups()
    assert tuple(groups) == PARAMETER_GROUPS
    listed = [id(p) for members in groups.values() for _, p in members]
    assert len(listed) == len(set(listed)) == len(list(net.parameters()))
    for group, members in groups.items():
        if group == "mask_head":  # per-task mask heads exist only with task_heads=True (TIL)
            assert members == []
            continue
        assert members, f"group {group} is empty"
        trainable = {p.requires_grad for _, p in members}
        assert trainable == ({False} if group == "visual" else {True}), group
    assert all(".lora_" in n for n, _ in groups["visual_lora"] + groups["decoder_lora"])
    assert sum(p.numel() for _, p in groups["visual_lora"]) == (
        len(net.visual.model.blocks) * 2 * 8 * net.visual.token_dim * 2)  # Q and V: A [r,D] and B [D,r]
    assert net.total_parameter_count() == sum(p.numel() for p in net.parameters())
    assert net.trainable_parameter_count() == sum(
        p.numel() for g, members in groups.items() if g != "visual" for _, p in members)
    assert net.trainable_parameter_count() < net.total_parameter_count()


def test_gradients_reach_only_trainable_groups_and_base_stays_fixed():
    net = _net().train()
    frames, audio = _inputs()
    out = net(av_batch(frames, audio))
    loss = out.mask_logits.sigmoid().mean() + out.class_logits.logsumexp(1).mean()
    loss.backward()
    groups = net.named_parameter_groups()
    assert all(p.grad is None for _, p in groups["visual"])
    for group in PARAMETER_GROUPS[1:]:
        for name, p in groups[group]:
            assert p.grad is not None, name
    # B starts at zero, so it is B (not A) that receives a non-zero gradient at the first step
    assert any(p.grad.abs().sum() > 0 for n, p in groups["visual_lora"] if n.endswith("_B"))
    frozen_before = {n: p.detach().clone() for n, p in groups["visual"]}
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    for n, p in groups["visual"]:
        assert torch.equal(p, frozen_before[n]), n


def test_class_head_growth_keeps_old_rows_and_logits():
    net = _net(num_classes=0).eval()
    assert net.num_classes == 0 and net.named_parameter_groups()["class_head"] == []
    frames, audio = _inputs()
    net.add_classes(3)
    first = net(av_batch(frames, audio)).class_logits.detach()
    old_w = net.class_head.weight.detach().clone()
    old_b = net.class_head.bias.detach().clone()
    net.add_classes(2)
    assert net.num_classes == 5
    assert torch.equal(net.class_head.weight[:3], old_w)
    second = net(av_batch(frames, audio)).class_logits
    assert second.shape == (B * T, 5)
    # same rows, same pooled features; only BLAS blocking of a wider matmul may differ in the last bit
    torch.testing.assert_close(second[:, :3], first, rtol=0, atol=1e-6)
    assert torch.equal(net.class_head.bias[:3], old_b)
    with pytest.raises(ValueError, match="n > 0"):
        net.add_classes(0)


def test_audio_context_clip_vs_frame_dependency_structure():
    frames, audio = _inputs()
    for context in ("frame", "clip"):
        net = _net(audio_context=context).eval()
        _perturb(net.conditioning.mlp[-1].parameters())  # let the conditioning use the audio too
        base = net(av_batch(frames, audio)).mask_logits.view(B, T, 1, H, W)
        changed_audio = audio.clone()
        changed_audio[0, 2] += 3.0  # clip 0, second 2
        new = net(av_batch(frames, changed_audio)).mask_logits.view(B, T, 1, H, W)
        moved = [[not torch.allclose(new[b, t], base[b, t]) for t in range(T)] for b in range(B)]
        assert moved[1] == [False] * T, "the other clip must not see this audio"
        expected = [t == 2 for t in range(T)] if context == "frame" else [True] * T
        assert moved[0] == expected, context


def test_same_seed_same_outputs_and_merged_lora_export_matches():
    frames, audio = _inputs()
    a, b = _net(seed=3).eval(), _net(seed=3).eval()
    assert torch.equal(a(av_batch(frames, audio)).mask_logits, b(av_batch(frames, audio)).mask_logits)
    _perturb([p for n, p in a.named_parameters() if ".lora_" in n])
    adapted = a(av_batch(frames, audio))
    merged_names = merge_lora(a)
    assert merged_names and not any(".lora_" in n for n, _ in a.named_parameters())
    merged = a(av_batch(frames, audio))
    torch.testing.assert_close(merged.mask_logits, adapted.mask_logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(merged.class_logits, adapted.class_logits, rtol=1e-4, atol=1e-4)


def test_decoder_lora_switch_and_base_trainability():
    plain = _net(decoder_lora=False)
    assert plain.named_parameter_groups()["decoder_lora"] == []
    frozen_base = _net(decoder_base_trainable=False)
    groups = frozen_base.named_parameter_groups()
    assert all(not p.requires_grad for n, p in groups["decoder"] if ".conv." in n or "proj" in n)
    assert all(p.requires_grad for _, p in groups["decoder_lora"])
    assert isinstance(frozen_base.decoder.in_proj, LoRAConv2d)
    frozen_base.set_group_trainable("decoder", True)
    assert all(p.requires_grad for _, p in frozen_base.named_parameter_groups()["decoder"])
    with pytest.raises(ValueError, match="unknown parameter group 'nope'"):
        frozen_base.set_group_trainable("nope", True)


def test_pvt_v2_backbone_variant_runs_with_q_kv_lora():
    net = _net(visual="pvt_v2_b0", img_size=H).eval()
    assert isinstance(net.visual.model.stages[0].blocks[0].attn.kv, LoRASlicedLinear)
    frames, audio = _inputs(b=1)
    out = net(av_batch(frames, audio))
    assert out.mask_logits.shape == (T, 1, H, W)
    assert net.decoder.skip_levels == [3, 2, 1, 0]  # native strides 4, 8, 16, 32 below the stride-32 input


def test_bad_inputs_and_config_are_rejected_with_clear_messages():
    net = _net().eval()
    frames, audio = _inputs()
    with pytest.raises(ValueError, match=r"audio must be \[B=2, T=5, D_a=24\]"):
        net(av_batch(frames, audio[..., :10]))
    with pytest.raises(ValueError, match=r"frames must be \[B, T, 3, H, W\]"):
        net(av_batch(frames[:, 0], audio))
    with pytest.raises(ValueError, match=r"unknown AtlasNetConfig key\(s\) \['dimm'\]"):
        AtlasNetConfig.from_dict({"dimm": 3})
    with pytest.raises(ValueError, match="audio_context"):
        AtlasNetConfig(audio_context="song")
    with pytest.raises(ValueError, match="unknown decoder 'unet'"):
        _net(decoder="unet")
    cfg = AtlasNetConfig(visual_out_indices=[0, 3], lora_targets="qkv")
    assert AtlasNetConfig.from_dict(cfg.to_dict()) == cfg


def test_state_dict_round_trip_and_deepcopy_reproduce_outputs(tmp_path):
    import copy

    net = _net(seed=1).eval()
    _perturb([p for n, p in net.named_parameters() if ".lora_" in n or n.startswith("conditioning.")])
    frames, audio = _inputs()
    want = net(av_batch(frames, audio)).mask_logits
    torch.save(net.state_dict(), tmp_path / "atlas.pt")
    fresh = _net(seed=2).eval()
    fresh.load_state_dict(torch.load(tmp_path / "atlas.pt", weights_only=True), strict=True)
    assert torch.equal(fresh(av_batch(frames, audio)).mask_logits, want)
    twin = copy.deepcopy(net)
    assert torch.equal(twin(av_batch(frames, audio)).mask_logits, want)
    assert all(a is not b for a, b in zip(twin.parameters(), net.parameters()))


def test_a_few_steps_fit_a_single_batch():
    net = _net(seed=0, num_classes=0).train()
    frames, audio = _inputs(b=1)
    target = torch.zeros(T, 1, H, W)
    target[:, :, 16:48, 8:40] = 1.0  # a square "sounding object"
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(av_batch(frames, audio)).mask_logits, target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_frame_ids_decode_the_same_frames_as_a_full_pass():
    torch.manual_seed(0)
    net = AtlasNet(AtlasNetConfig(img_size=32, dim=32, num_heads=2, decoder_dim=16, audio_dim=16, num_classes=3))
    net.eval()
    frames, audio = torch.rand(2, 5, 3, 32, 32), torch.randn(2, 5, 16)
    full = net(av_batch(frames, audio))
    part = net(av_batch(frames, audio, frame_ids=[0, 3]))
    want = full.mask_logits.reshape(2, 5, 1, 32, 32)[:, [0, 3]].reshape(4, 1, 32, 32)
    torch.testing.assert_close(part.mask_logits, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(part.class_logits, full.class_logits.reshape(2, 5, 3)[:, [0, 3]].reshape(4, 3),
                               rtol=1e-5, atol=1e-5)


def test_decoder_resizes_skips_in_the_main_paths_layout_with_the_same_bits():
    """The decoder resizes each skip in the layout of its main path (channels-last from the token map)
    to spare the sum a mixed-layout pass: forward and gradients must be bit-identical to resizing the
    skips in their own (contiguous) layout, the decoder before the change."""
    import torch.nn.functional as F

    from clavs.models import decoders

    def own_layout_features(self, x, skips=()):
        x = self.in_proj(x)
        for lvl, block in enumerate(self.blocks):
            if lvl > 0:
                x = F.interpolate(self.up_proj[lvl - 1](x), scale_factor=2, mode="bilinear", align_corners=False)
            for skip, proj, skip_lvl in zip(skips, self.skip_proj, self.skip_levels):
                if skip_lvl == lvl:
                    s = proj(skip)
                    assert s.is_contiguous()
                    if s.shape[-2:] != x.shape[-2:]:
                        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
                    x = x + s
            x = block(x)
        return x

    def forward_backward(net):
        net.zero_grad(set_to_none=True)
        out = net(av_batch(*_inputs(seed=3, b=4)))
        out.mask_logits.square().mean().backward()
        return out.mask_logits.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    net = _net(visual_out_indices=(0, 1, 2, 3))
    _perturb([p for n, p in net.named_parameters() if "lora" in n])
    layouts = []
    hook = net.decoder.in_proj.register_forward_hook(
        lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last) and not o.is_contiguous()))
    logits, grads = forward_backward(net)
    hook.remove()
    assert layouts == [True]  # the case the change is for: a channels-last main path
    original = decoders.ProgressiveDecoder.features
    try:
        decoders.ProgressiveDecoder.features = own_layout_features
        ref_logits, ref_grads = forward_backward(net)
    finally:
        decoders.ProgressiveDecoder.features = original
    assert torch.equal(logits, ref_logits)
    assert grads.keys() == ref_grads.keys() and all(torch.equal(grads[n], ref_grads[n]) for n in grads)
