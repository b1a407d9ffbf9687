"""Visual encoders: timm ViT and PVT-v2 models returning multi-scale NCHW feature maps.

Weights (never downloaded unless asked for):
- ``weights=None``: random init (deterministic under ``torch.manual_seed``);
- ``weights=<path>``: a local ``.pth``/``.pt``/``.safetensors`` file, loaded through
  ``timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=path))`` so the model
  family's checkpoint filter runs: original whai362 PVT-v2 checkpoints (``patch_embed1``,
  ``block1.0``, ``norm1``...) are remapped, ViT ``pos_embed``/patch embeddings are resampled to the
  requested size. Because timm loads non-strictly when the classifier is dropped, we then check
  ourselves that every backbone tensor was present in the file and fail naming the missing keys;
- ``weights='hub'``: the timm hub weights of the model name (needs network or a warm HF cache;
  offline it fails fast with a message telling the user to pass a file).

Input: float frames ``[B, 3, H, W]`` in [0, 1]; the encoder normalises them with the model's
pretrained mean/std (``normalize_input=False`` to feed already-normalised frames).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import timm
import torch
from timm.models import load_state_dict as timm_load_state_dict
from timm.models import pvt_v2 as timm_pvt_v2
from timm.models import vision_transformer as timm_vit
from torch import nn

__all__ = ["VisualPreset", "VISUAL_PRESETS", "VisualFeatures", "VisualEncoder", "create_visual_encoder",
           "WeightsLoadError"]


class WeightsLoadError(RuntimeError):
    """Pretrained weights could not be loaded (missing file, wrong layout, hub unreachable)."""


@dataclass(frozen=True)
class VisualPreset:
    """A named encoder configuration: timm model name, input size, taps, and timm kwargs overrides."""

    model_name: str
    img_size: int
    out_indices: tuple[int, ...]
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    hub_weights: bool = True  # False when the kwargs change the architecture away from the hub weights
    description: str = ""
    # Input normalisation; None = the timm model's own pretrained_cfg (e.g. 0.5/0.5 for AugReg ViTs).
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


VISUAL_PRESETS: dict[str, VisualPreset] = {
    # Trains in well under a second per step on 2 CPU cores at 64x64 with 20 frames per batch;
    # 8x8 grid of patch tokens. Architecture differs from vit_tiny (patch 8, width 128, depth 4),
    # so there are no hub weights: it is pretrained by `clavs pretrain` on synthetic classes.
    "tiny": VisualPreset("vit_tiny_patch16_224", 64, (0, 1, 2, 3),
                         dict(patch_size=8, embed_dim=128, depth=4, num_heads=4),
                         hub_weights=False, description="ViT, patch 8, width 128, depth 4, heads 4, 64x64",
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    # ATLAS in the paper: ViT-B/16 at 224; taps after blocks 3, 6, 9, 12 (the usual SETR/ViTDet choice).
    "paper": VisualPreset("vit_base_patch16_224", 224, (2, 5, 8, 11), description="ViT-B/16 at 224"),
    # The PVT-v2 backbones of AVSBench / AVSegFormer (b5) and their small sibling (b0, for tests).
    "pvt_v2_b5": VisualPreset("pvt_v2_b5", 224, (0, 1, 2, 3), description="PVT-v2-b5 at 224"),
    "pvt_v2_b0": VisualPreset("pvt_v2_b0", 224, (0, 1, 2, 3), description="PVT-v2-b0 at 224"),
}


@dataclass
class VisualFeatures:
    """What :meth:`VisualEncoder.forward` returns.

    maps:   multi-scale NCHW feature maps, shallow to deep (``channels[i]``, stride ``reductions[i]``);
    tokens: final spatial tokens ``[B, N, C_tok]`` (ViT: after the final norm, prefix tokens removed;
            PVT-v2: the last stage flattened), on the grid ``grid`` = (h, w), N = h * w;
    pooled: ``[B, C_tok]`` global embedding (ViT: the model's own pooling, e.g. the class token).
    """

    maps: list[torch.Tensor]
    tokens: torch.Tensor
    grid: tuple[int, int]
    pooled: torch.Tensor


def _family(model: nn.Module) -> str:
    if isinstance(model, timm_vit.VisionTransformer):
        return "vit"
    if isinstance(model, timm_pvt_v2.PyramidVisionTransformerV2):
        return "pvt_v2"
    raise ValueError(f"unsupported visual encoder class {type(model).__name__}: use a timm ViT or PVT-v2 model")


_FILTERS = {"vit": timm_vit.checkpoint_filter_fn, "pvt_v2": timm_pvt_v2.checkpoint_filter_fn}


class VisualEncoder(nn.Module):
    """A timm ViT / PVT-v2 model exposing multi-scale features (see :class:`VisualFeatures`).

    Attributes: ``family`` ('vit' | 'pvt_v2'), ``channels`` and ``reductions`` (one per map),
    ``token_dim``/``token_reduction`` (of ``tokens``), ``pooled_dim``, ``img_size``, ``name``.
    """

    def __init__(self, model: nn.Module, name: str, img_size: int, out_indices: Sequence[int],
                 normalize_input: bool = True):
        super().__init__()
        self.family = _family(model)
        self.model = model
        self.name = name
        self.img_size = img_size
        self.out_indices = tuple(int(i) for i in out_indices)
        n_taps = len(model.blocks) if self.family == "vit" else len(model.stages)
        bad = [i for i in self.out_indices if not 0 <= i < n_taps]
        if not self.out_indices or bad:
            raise ValueError(f"out_indices {self.out_indices} invalid for {name}: must be non-empty, in [0, {n_taps})")
        if list(self.out_indices) != sorted(set(self.out_indices)):
            raise ValueError(f"out_indices {self.out_indices} must be strictly increasing")
        if self.family == "vit":
            patch = model.patch_embed.patch_size
            if patch[0] != patch[1]:
                raise ValueError(f"non-square patches {patch} are not supported")
            self.channels = [model.embed_dim] * len(self.out_indices)
            self.reductions = [patch[0]] * len(self.out_indices)
            self.token_dim, self.token_reduction = model.embed_dim, patch[0]
        else:
            info = model.feature_info
            self.channels = [info[i]["num_chs"] for i in self.out_indices]
            self.reductions = [info[i]["reduction"] for i in self.out_indices]
            self.token_dim, self.token_reduction = info[-1]["num_chs"], info[-1]["reduction"]
        self.pooled_dim = model.num_features
        self.normalize_input = normalize_input
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225)), dtype=torch.float32).view(1, 3, 1, 1)
        # Not persistent: they come from the model name, and keep state_dicts identical to timm's + prefix.
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"visual encoder expects frames [B, 3, H, W], got {tuple(x.shape)}")
        return (x - self.input_mean) / self.input_std if self.normalize_input else x

    def forward(self, x: torch.Tensor, prefix_tokens: torch.Tensor | None = None) -> VisualFeatures:
        """Frames ``[B, 3, H, W]`` -> :class:`VisualFeatures`.

        ``prefix_tokens`` ``[B, P, C]`` (ViT only; L2P's prompts): extra tokens inserted after the patch
        and position embeddings, behind the class token, before the first block:
        ``[cls, p_1..p_P, patches]``. They take part in every block's attention and are dropped again
        from ``maps``, ``tokens`` and ``pooled``, so the outputs keep the patch grid.
        """
        x = self._prepare(x)
        m = self.model
        if self.family == "vit":
            if prefix_tokens is None:
                final, maps = m.forward_intermediates(x, indices=list(self.out_indices), output_fmt="NCHW")
            else:
                final, maps = self._vit_prompted(x, prefix_tokens)
            h, w = maps[-1].shape[-2:]
            pooled = m.forward_head(final, pre_logits=True)
            tokens = final[:, m.num_prefix_tokens:]
        else:
            if prefix_tokens is not None:
                raise ValueError(f"prefix tokens (prompts) need a ViT encoder; {self.name} is a {self.family} "
                                 "model, whose stages have no token sequence to extend")
            # Run every stage (the tokens come from the last one), keep the requested taps.
            all_maps = m.forward_intermediates(x, indices=None, output_fmt="NCHW", intermediates_only=True)
            maps = [all_maps[i] for i in self.out_indices]
            last = all_maps[-1]
            h, w = last.shape[-2:]
            tokens = last.flatten(2).transpose(1, 2)
            pooled = last.mean(dim=(-2, -1))
        return VisualFeatures(maps=list(maps), tokens=tokens, grid=(int(h), int(w)), pooled=pooled)

    def _vit_prompted(self, x: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """timm's forward_intermediates with `prefix` inserted before the blocks; returns the final
        normed sequence and the NCHW taps, both without the inserted tokens."""
        m = self.model
        seq = m.norm_pre(m.patch_drop(m._pos_embed(m.patch_embed(x))))
        n, p = m.num_prefix_tokens, prefix.shape[1]
        if prefix.dim() != 3 or prefix.shape[0] != seq.shape[0] or prefix.shape[2] != seq.shape[2]:
            raise ValueError(f"prefix_tokens must be [B={seq.shape[0]}, P, C={seq.shape[2]}], got {tuple(prefix.shape)}")
        seq = torch.cat([seq[:, :n], prefix.to(seq.dtype), seq[:, n:]], dim=1)
        h, w = m.patch_embed.dynamic_feat_size(x.shape[-2:])
        maps = []
        for i, block in enumerate(m.blocks):
            seq = block(seq)
            if i in self.out_indices:
                maps.append(seq[:, n + p:].reshape(seq.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous())
        final = m.norm(seq)
        return torch.cat([final[:, :n], final[:, n + p:]], dim=1), maps

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global embedding ``[B, pooled_dim]`` for a classification head (used by pretraining)."""
        x = self._prepare(x)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        """The timm model's state_dict in timm's own key layout, any LoRA merged in (loadable by ``weights=``)."""
        from .lora import merged_state_dict

        return merged_state_dict(self.model)

    def save_backbone(self, path: str | os.PathLike) -> Path:
        """Write :meth:`backbone_state_dict` atomically with ``torch.save`` (readable with weights_only=True)."""
        import io

        from clavs.utils.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in self.backbone_state_dict().items()}, buf)
        return atomic_write_bytes(path, buf.getvalue())


def _check_complete(model: nn.Module, family: str, path: str) -> None:
    """Fail if the file lacks any backbone tensor (timm itself loads non-strictly once the head is dropped)."""
    try:
        raw = timm_load_state_dict(path, use_ema=True, device="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file named
        raise WeightsLoadError(f"cannot read weights file {path}: {exc}") from exc
    filtered = _FILTERS[family](raw, model)
    expected = set(model.state_dict())
    missing = sorted(expected - set(filtered))
    head = {k for k in filtered if k.startswith("head.")}
    unexpected = sorted(set(filtered) - expected - head)
    if missing or unexpected:
        raise WeightsLoadError(
            f"weights file {path} does not match {type(model).__name__}: "
            f"{len(missing)} missing key(s) {missing[:6]}, {len(unexpected)} unexpected key(s) {unexpected[:6]} "
            "(expected a timm or original-layout checkpoint of the same architecture)")


def create_visual_encoder(name: str, *, weights: str | os.PathLike | None = None, img_size: int | None = None,
                          out_indices: Sequence[int] | None = None, normalize_input: bool = True,
                          **timm_kwargs: Any) -> VisualEncoder:
    """Build a :class:`VisualEncoder` from a preset name (``VISUAL_PRESETS``) or a timm model name.

    ``weights``: None (random init), a local file path, or ``'hub'``. ``img_size`` and ``out_indices``
    default to the preset's (timm names: 224 and all four stages / the last four blocks).
    ``timm_kwargs`` override the preset's timm kwargs (e.g. ``dynamic_img_size=True``).
    """
    if name in VISUAL_PRESETS:
        preset = VISUAL_PRESETS[name]
    else:
        if not timm.is_model(name.partition(".")[0]):
            raise ValueError(f"unknown visual encoder {name!r}: not a preset ({sorted(VISUAL_PRESETS)}) "
                             "nor a timm model name")
        preset = VisualPreset(name, 224, ())
    model_name = preset.model_name
    img_size = int(img_size or preset.img_size)
    kwargs = {**preset.timm_kwargs, **timm_kwargs, "num_classes": 0}
    if not model_name.startswith("pvt_v2"):  # PVT-v2 takes any input size (multiple of 32), no img_size arg
        kwargs["img_size"] = img_size

    path: str | None = None
    if weights is None:
        model = timm.create_model(model_name, pretrained=False, **kwargs)
    elif str(weights) == "hub":
        if not preset.hub_weights or timm_kwargs.keys() & {"patch_size", "embed_dim", "depth", "num_heads",
                                                            "embed_dims", "depths"}:
            raise WeightsLoadError(f"visual encoder {name!r} changes the architecture of {model_name}, so there are "
                                   "no hub weights for it; pass weights=<file> (e.g. from `clavs pretrain`)")
        try:
            model = timm.create_model(model_name, pretrained=True, **kwargs)
        except Exception as exc:  # noqa: BLE001 - hub / network errors come in many types
            raise WeightsLoadError(
                f"could not fetch hub weights for {model_name} ({type(exc).__name__}: {exc}). Offline? Download the "
                f"checkpoint on a machine with network access and pass its local path as weights=<file>") from exc
    else:
        path = str(weights)
        if not Path(path).is_file():
            raise FileNotFoundError(f"visual encoder weights file not found: {path}")
        try:
            model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **kwargs)
        except Exception as exc:  # noqa: BLE001 - re-raised with the file named
            from clavs.errors import short_reason

            raise WeightsLoadError(f"could not load weights file {path} into {model_name}: "
                                   f"{short_reason(exc)}") from exc

    family = _family(model)
    if path is not None:
        _check_complete(model, family, path)
    if out_indices is None:
        out_indices = preset.out_indices or (
            tuple(range(len(model.stages))) if family == "pvt_v2"
            else tuple(range(max(0, len(model.blocks) - 4), len(model.blocks))))
    encoder = VisualEncoder(model, name, img_size, out_indices, normalize_input=normalize_input)
    if preset.mean is not None and preset.std is not None:
        encoder.input_mean.copy_(torch.tensor(preset.mean).view(1, 3, 1, 1))
        encoder.input_std.copy_(torch.tensor(preset.std).view(1, 3, 1, 1))
    return encoder
