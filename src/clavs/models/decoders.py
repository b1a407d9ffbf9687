"""Segmentation decoders: fused token map (+ encoder skip features) -> mask logits at input resolution."""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProgressiveDecoder", "DECODERS", "build_decoder"]


def _log2_exact(value: int, what: str) -> int:
    if value < 1 or value & (value - 1):
        raise ValueError(f"{what} must be a power of two, got {value}")
    return int(math.log2(value))


class _ConvBlock(nn.Module):
    """conv3x3 -> GroupNorm -> GELU. GroupNorm, not BatchNorm: the result must not depend on the batch."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm = nn.GroupNorm(math.gcd(8, channels), channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ProgressiveDecoder(nn.Module):
    """Upsample by 2 per level from the fused map's stride ``in_reduction`` down to stride 1.

    Levels ``l = 0..L`` have strides ``in_reduction / 2**l`` and widths ``max(min_dim, dim // 2**l)``.
    At each level: add the skip features assigned to it (1x1 projection, bilinear resize), then a
    conv3x3-GroupNorm-GELU block; between levels a 1x1 conv narrows the width, then x2 bilinear
    upsampling; a final 1x1 conv gives ``out_channels`` logits, resized to ``out_size`` if needed.

    Skip assignment (one rule for hierarchical and plain encoders): sorted deepest first, the k-th
    skip goes to stride ``min(its own stride, in_reduction / 2**k)``. A PVT-v2 pyramid (4..32) lands
    on its native strides; the four equal-stride ViT taps spread over strides 16, 8, 4, 2 (ViT-B/16)
    or 8, 4, 2, 1 (patch 8), deepest at the coarsest, as in SETR-MLA / simple feature pyramids.
    """

    def __init__(self, in_dim: int, in_reduction: int, skip_channels: Sequence[int] = (),
                 skip_reductions: Sequence[int] = (), dim: int = 64, min_dim: int = 16, out_channels: int = 1):
        super().__init__()
        if len(skip_channels) != len(skip_reductions):
            raise ValueError(f"{len(skip_channels)} skip channel counts but {len(skip_reductions)} skip reductions")
        n_up = _log2_exact(in_reduction, "decoder input reduction")
        for r in skip_reductions:
            _log2_exact(r, "skip reduction")
        self.in_reduction = in_reduction
        self.widths = [max(min_dim, dim // 2**lvl) for lvl in range(n_up + 1)]
        order = sorted(range(len(skip_reductions)), key=lambda i: (-skip_reductions[i], -i))
        self.skip_levels: list[int] = [0] * len(skip_reductions)
        for k, i in enumerate(order):
            stride = min(skip_reductions[i], max(1, in_reduction // 2**k))
            self.skip_levels[i] = n_up - _log2_exact(stride, "skip stride")
        self.in_proj = nn.Conv2d(in_dim, self.widths[0], 1)
        self.skip_proj = nn.ModuleList(
            nn.Conv2d(c, self.widths[lvl], 1) for c, lvl in zip(skip_channels, self.skip_levels))
        self.blocks = nn.ModuleList(_ConvBlock(w) for w in self.widths)
        self.up_proj = nn.ModuleList(nn.Conv2d(self.widths[i], self.widths[i + 1], 1) for i in range(n_up))
        self.head = nn.Conv2d(self.widths[-1], out_channels, 1)

    def lora_target_names(self) -> list[str]:
        """Qualified names of the convs worth LoRA-adapting (all but the output head)."""
        return [n for n, m in self.named_modules() if isinstance(m, nn.Conv2d) and not n.startswith("head")]

    def features(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """``x [N, in_dim, h, w]`` (stride ``in_reduction``), ``skips`` as declared -> the last level's
        features ``[N, widths[-1], h*r, w*r]`` (before the output head)."""
        if len(skips) != len(self.skip_proj):
            raise ValueError(f"decoder built for {len(self.skip_proj)} skip maps, got {len(skips)}")
        x = self.in_proj(x)
        # A token map arrives channels-last (a permuted view) and the convs keep that layout; the skip
        # projections come out contiguous. Resizing a skip in the main path's layout gives the same bits
        # and spares the sum a mixed-layout pass (a large share of the decoder's time on the CPU).
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        for lvl, block in enumerate(self.blocks):
            if lvl > 0:
                x = F.interpolate(self.up_proj[lvl - 1](x), scale_factor=2, mode="bilinear", align_corners=False)
            for skip, proj, skip_lvl in zip(skips, self.skip_proj, self.skip_levels):
                if skip_lvl == lvl:
                    s = proj(skip).contiguous(memory_format=layout)
                    if s.shape[-2:] != x.shape[-2:]:
                        s = F.interpolate(s, size=x.shape[-2:], mode="bilinear", align_corners=False)
                    x = x + s
            x = block(x)
        return x

    def logits(self, features: torch.Tensor, out_size: tuple[int, int] | None = None,
               head: nn.Module | None = None) -> torch.Tensor:
        """The output head (``head`` overrides the decoder's own, e.g. a per-task head), resized to ``out_size``."""
        head = head if head is not None else self.head
        if head is None:
            raise ValueError("this decoder's head was moved to per-task heads: pass head=")
        logits = head(features)
        if out_size is not None and tuple(logits.shape[-2:]) != tuple(out_size):
            logits = F.interpolate(logits, size=tuple(out_size), mode="bilinear", align_corners=False)
        return logits

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor] = (),
                out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """``x [N, in_dim, h, w]``, ``skips`` as declared -> logits ``[N, out, H, W]``."""
        return self.logits(self.features(x, skips), out_size)


DECODERS = {"progressive": ProgressiveDecoder}


def build_decoder(kind: str, **kwargs) -> nn.Module:
    """Decoder by name (``DECODERS``)."""
    if kind not in DECODERS:
        raise ValueError(f"unknown decoder {kind!r}; choose one of {sorted(DECODERS)}")
    return DECODERS[kind](**kwargs)
