"""Hand-written LoRA: init identity, scaling, Q/V-only adaptation, merging, naming, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from torch import nn

from clavs.models.encoders.lora import (
    LoRAConv2d,
    LoRALinear,
    LoRAQKV,
    LoRASlicedLinear,
    apply_lora,
    lora_named_parameters,
    lora_parameters,
    merge_lora,
    merged_state_dict,
)


def _tiny_vit() -> nn.Module:
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2,
                             num_heads=3, num_classes=0)


def _randomise_lora(module: nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(module):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def test_lora_linear_starts_as_base_and_freezes_it():
    torch.manual_seed(0)
    base = nn.Linear(12, 7)
    expected_w = base.weight.detach().clone()
    layer = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 5, 12)
    assert torch.equal(layer(x), F.linear(x, expected_w, base.bias))
    assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    assert layer.lora_A.shape == (4, 12) and layer.lora_B.shape == (7, 4)
    assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    # shares, not copies, the base parameters: state_dict keys of the base don't move
    assert layer.weight is base.weight
    assert set(layer.state_dict()) == {"weight", "bias", "lora_A", "lora_B"}


def test_lora_a_init_matches_kaiming_uniform_bound():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(300, 10), r=64, alpha=16)
    bound = 1.0 / math.sqrt(300)  # kaiming_uniform(a=sqrt(5)): gain sqrt(2/6) * sqrt(3/fan_in)
    a = layer.lora_A.detach()
    assert a.abs().max() <= bound and a.abs().max() > 0.9 * bound


@pytest.mark.parametrize("r,alpha", [(1, 1.0), (4, 16.0), (8, 4.0)])
def test_lora_linear_matches_numpy_formula(r, alpha):
    torch.manual_seed(r)
    layer = LoRALinear(nn.Linear(6, 5), r=r, alpha=alpha)
    _randomise_lora(layer, seed=r)
    x = torch.randn(4, 6)
    w, b = layer.weight.detach().double().numpy(), layer.bias.detach().double().numpy()
    a, bb = layer.lora_A.detach().double().numpy(), layer.lora_B.detach().double().numpy()
    xn = x.double().numpy()
    expected = xn @ w.T + b + (alpha / r) * (xn @ a.T) @ bb.T
    assert layer.scaling == pytest.approx(alpha / r)
    np.testing.assert_allclose(layer(x).detach().double().numpy(), expected, rtol=1e-5, atol=1e-5)


def test_dropout_only_on_the_adapter_path():
    torch.manual_seed(0)
    base = nn.Linear(10, 10)
    layer = LoRALinear(base, r=2, alpha=2, dropout=0.5).train()
    x = torch.randn(8, 10)
    # B = 0: whatever dropout does to the adapter input, the output is the base output
    assert torch.equal(layer(x), F.linear(x, base.weight, base.bias))
    _randomise_lora(layer)
    torch.manual_seed(1)
    y1 = layer(x)
    torch.manual_seed(2)
    y2 = layer(x)
    assert not torch.allclose(y1, y2)  # training: stochastic adapter path
    layer.eval()
    assert torch.equal(layer(x), layer(x))


def test_qkv_adapts_q_and_v_only_and_k_output_stays_fixed_after_training():
    torch.manual_seed(0)
    d = 8
    base = nn.Linear(d, 3 * d)
    layer = LoRAQKV(base, r=2, alpha=4)
    assert sorted(n for n, _ in layer.named_parameters() if n.startswith("lora")) == [
        "lora_q_A", "lora_q_B", "lora_v_A", "lora_v_B"]
    x = torch.randn(16, d)
    before = layer(x).detach().clone()
    opt = torch.optim.SGD([p for p in layer.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        (layer(x) ** 2).sum().backward()
        opt.step()
    after = layer(x).detach()
    assert torch.equal(after[:, d:2 * d], before[:, d:2 * d]), "K slice must be untouched"
    assert not torch.allclose(after[:, :d], before[:, :d]), "Q slice should have been adapted"
    assert not torch.allclose(after[:, 2 * d:], before[:, 2 * d:]), "V slice should have been adapted"


def test_sliced_linear_matches_brute_force_per_slice():
    torch.manual_seed(0)
    base = nn.Linear(5, 9)
    layer = LoRASlicedLinear(base, {"a": (0, 2), "b": (6, 9)}, r=3, alpha=6)
    _randomise_lora(layer)
    x = torch.randn(7, 5)
    expected = F.linear(x, base.weight, base.bias).detach().clone()
    for name, (s, e) in {"a": (0, 2), "b": (6, 9)}.items():
        a, b = getattr(layer, f"lora_{name}_A"), getattr(layer, f"lora_{name}_B")
        for i in range(7):  # row by row, independent of the vectorised code path
            expected[i, s:e] += 2.0 * (b @ (a @ x[i])).detach()
    torch.testing.assert_close(layer(x).detach(), expected, rtol=1e-5, atol=1e-6)


def test_bad_slices_and_ranks_are_rejected():
    with pytest.raises(ValueError, match="overlap"):
        LoRASlicedLinear(nn.Linear(4, 6), {"a": (0, 4), "b": (3, 6)}, r=1, alpha=1)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), r=0, alpha=1)
    with pytest.raises(ValueError, match="divisible by 3"):
        LoRAQKV(nn.Linear(4, 8), r=1, alpha=1)
    with pytest.raises(ValueError, match="groups"):
        LoRAConv2d(nn.Conv2d(4, 4, 3, groups=2), r=1, alpha=1)


def test_conv_lora_equals_factorised_two_conv_oracle_and_merges_exactly():
    torch.manual_seed(0)
    base = nn.Conv2d(4, 6, 3, stride=2, padding=1)
    layer = LoRAConv2d(base, r=2, alpha=3)
    x = torch.randn(2, 4, 9, 9)
    assert torch.equal(layer(x), base(x))  # zero-init B
    _randomise_lora(layer)
    # oracle: A as a conv with the base's geometry, then B as a 1x1 conv
    low = F.conv2d(x, layer.lora_A, None, stride=2, padding=1)
    oracle = base(x) + 1.5 * F.conv2d(low, layer.lora_B[:, :, None, None])
    torch.testing.assert_close(layer(x), oracle, rtol=1e-5, atol=1e-5)
    merged = layer.merged()
    assert type(merged) is nn.Conv2d
    assert torch.equal(merged(x), layer.eval()(x))


def test_apply_lora_on_timm_vit_names_freezing_and_identity_at_init():
    torch.manual_seed(0)
    vit = _tiny_vit().eval()
    x = torch.randn(2, 3, 32, 32)
    reference = vit(x).detach()
    base_keys = set(vit.state_dict())
    vit.requires_grad_(False)
    names = apply_lora(vit, targets=("qkv",), r=4, alpha=8)
    expected = [f"blocks.{i}.attn.qkv.lora_{p}_{m}" for i in range(2) for p in "qv" for m in "AB"]
    assert names == expected
    assert torch.equal(vit(x), reference)
    assert {n for n, p in vit.named_parameters() if p.requires_grad} == set(expected)
    assert set(vit.state_dict()) == base_keys | set(expected)
    assert [n for n, _ in lora_named_parameters(vit)] == expected
    # idempotent: a second call adapts nothing new
    assert apply_lora(vit, targets=("qkv",), r=4, alpha=8) == expected


def test_apply_lora_variants_and_errors():
    vit = _tiny_vit()
    apply_lora(vit, targets=("qkv", "attn.proj", "fc1"), r=2, alpha=2, qv_only=False)
    blk = vit.blocks[0]
    assert type(blk.attn.qkv) is LoRALinear and type(blk.attn.proj) is LoRALinear and type(blk.mlp.fc1) is LoRALinear
    assert type(vit.patch_embed.proj) is nn.Conv2d  # 'attn.proj' does not catch patch_embed.proj
    with pytest.raises(ValueError, match="no submodule matches"):
        apply_lora(_tiny_vit(), targets=("nonexistent",))
    with pytest.raises(TypeError, match="only nn.Linear and nn.Conv2d"):
        apply_lora(_tiny_vit(), targets=("norm1",))


def test_pvt_q_and_kv_targets_adapt_v_half_of_kv():
    torch.manual_seed(0)
    pvt = timm.create_model("pvt_v2_b0", num_classes=0)
    apply_lora(pvt, targets=("q", "kv"), r=2, alpha=4)
    attn = pvt.stages[0].blocks[0].attn
    assert type(attn.q) is LoRALinear
    assert isinstance(attn.kv, LoRASlicedLinear) and attn.kv.slices == {"v": (32, 64)}


def test_merge_restores_plain_layers_with_identical_outputs_and_keys():
    torch.manual_seed(0)
    vit = _tiny_vit().eval()
    plain_keys = set(vit.state_dict())
    apply_lora(vit, targets=("qkv", "fc2"), r=4, alpha=8)
    _randomise_lora(vit, seed=3)
    x = torch.randn(2, 3, 32, 32)
    adapted = vit(x).detach()
    snapshot = merged_state_dict(vit)
    assert any("lora" in k for k in vit.state_dict()), "merged_state_dict must not modify the module"
    merged_names = merge_lora(vit)
    assert merged_names == [f"blocks.{i}.{m}" for i in range(2) for m in ("attn.qkv", "mlp.fc2")]
    for name in merged_names:
        assert type(vit.get_submodule(name)) is nn.Linear
    assert list(lora_parameters(vit)) == []
    assert set(vit.state_dict()) == plain_keys == set(snapshot)
    torch.testing.assert_close(vit(x), adapted, rtol=1e-5, atol=1e-5)
    for k, v in vit.state_dict().items():
        assert torch.equal(v, snapshot[k])
    assert not any(p.requires_grad for n, p in vit.named_parameters() if "qkv" in n)  # frozen base stays frozen


def test_merge_scaling_uses_alpha_over_r():
    torch.manual_seed(0)
    base = nn.Linear(3, 4)
    w0 = base.weight.detach().clone()
    layer = LoRALinear(base, r=2, alpha=5)
    with torch.no_grad():
        layer.lora_A.fill_(1.0)
        layer.lora_B.fill_(0.5)
    merged = layer.merged()
    # B @ A = 0.5 * 2 (sum over r) = 1.0 everywhere; scaled by alpha / r = 2.5
    torch.testing.assert_close(merged.weight.detach(), w0 + 2.5)
