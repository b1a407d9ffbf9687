"""The plain AVS network of the paper's family (1): the baselines that adapt classic exemplar-free
continual-learning methods to AVS (Finetune, LwF, EWC, SI, MAS, L2P, RanPAC, FeCAM, DGR, PANDA).

A visual encoder, the frozen audio encoder's embeddings, a simple fusion and a segmentation decoder,
with none of ATLAS's parts (no LoRA, no pre-fusion conditioning, no cross-attention):

    batch.frames [B,T,3,H,W] --visual encoder (trainable)--> tokens v [Bt,N,C_v] + skip maps
    batch.audio  [B,T,D_a] --Linear+LayerNorm--> a [B,T,d]
    fusion: z = LN(MLP([v ; a_t]))  per token (concatenation, GELU MLP; a_t = the frame's own second)
    decoder: the progressive upsampling decoder of ATLAS without LoRA -> mask logits [Bt,1,H,W]
    class head: mean over z's tokens -> Linear (growable); TIL: one mask head per task

Visual prompts (L2P): a method module named with `use_visual_prompts(group)` is called at the start of
every forward with the batch and returns prefix tokens [B, P, C_v] (one set per clip, given to each of
its decoded frames) and named features; the encoder attends to them and drops them again
(VisualEncoder.forward's `prefix_tokens`), so fusion and decoder see the same patch grid.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
from torch import nn

from clavs.batch import Batch, ModelOutput
from clavs.models.architectures.base import METHOD_MODULES, SegmentationNet
from clavs.models.decoders import build_decoder
from clavs.models.encoders.visual import VisualEncoder, create_visual_encoder

__all__ = ["PlainAVSNet", "PlainAVSNetConfig", "PLAIN_PARAMETER_GROUPS"]

PLAIN_PARAMETER_GROUPS = ("visual", "audio_proj", "fusion", "decoder", "mask_head", "class_head")


@dataclass
class PlainAVSNetConfig:
    visual: str = "tiny"
    visual_weights: str | None = None
    img_size: int | None = None
    visual_out_indices: tuple[int, ...] | None = None
    visual_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize_input: bool = True
    audio_dim: int = 128
    dim: int = 128
    decoder: str = "progressive"
    decoder_dim: int = 64
    decoder_min_dim: int = 16
    use_class_head: bool = True
    num_classes: int = 0
    task_heads: bool = False

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PlainAVSNetConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PlainAVSNetConfig key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConcatFusion(nn.Module):
    """z = LN(W2 GELU(W1 [v ; a]))  for every visual token v of a frame and that frame's audio vector a."""

    def __init__(self, visual_dim: int, audio_dim: int, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(visual_dim + audio_dim, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """v [N,L,C_v], a [N,D] -> [N,L,dim]."""
        joined = torch.cat([v, a[:, None, :].expand(-1, v.shape[1], -1)], dim=-1)
        return self.norm(self.mlp(joined))


class PlainAVSNet(SegmentationNet):
    GROUPS = {"visual": "visual", "audio_proj": "audio_proj", "fusion": "fusion", "decoder": "decoder",
              "mask_heads": "mask_head", "class_head": "class_head"}
    GROUP_ORDER = PLAIN_PARAMETER_GROUPS

    def __init__(self, config: PlainAVSNetConfig | None = None, visual: VisualEncoder | None = None):
        super().__init__()
        self.config = cfg = config or PlainAVSNetConfig()
        self.visual = visual if visual is not None else create_visual_encoder(
            cfg.visual, weights=cfg.visual_weights, img_size=cfg.img_size, out_indices=cfg.visual_out_indices,
            normalize_input=cfg.normalize_input, **cfg.visual_kwargs)
        d = cfg.dim
        self.audio_proj = nn.Sequential(nn.Linear(cfg.audio_dim, d), nn.LayerNorm(d))
        self.fusion = ConcatFusion(self.visual.token_dim, d, d)
        self.decoder = build_decoder(cfg.decoder, in_dim=d, in_reduction=self.visual.token_reduction,
                                     skip_channels=self.visual.channels, skip_reductions=self.visual.reductions,
                                     dim=cfg.decoder_dim, min_dim=cfg.decoder_min_dim, out_channels=1)
        self._init_heads(d, cfg.use_class_head, cfg.num_classes, cfg.task_heads)
        self.visual_prompter: str | None = None  # group of the method module giving prefix tokens

    def use_visual_prompts(self, group: str | None) -> None:
        """Take prefix tokens for the visual encoder from the method module registered as `group`
        (None: stop). The module is called inside forward, so its parameters are used where DDP and
        the precision wrapper see them."""
        if group is not None:
            if self.visual.family != "vit":
                raise ValueError(f"visual prompts need a ViT encoder; model.visual={self.visual.name!r} is a "
                                 f"{self.visual.family} model (choose a ViT preset: tiny or paper)")
            if group not in getattr(self, METHOD_MODULES, {}):
                raise ValueError(f"no method module '{group}' is registered (Method.register_module first)")
        self.visual_prompter = group

    def forward(self, batch: Batch) -> ModelOutput:
        frames, frame_ids = batch.frames, batch.frame_ids
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        b, t_all, _, height, width = frames.shape
        if batch.audio.shape != (b, t_all, self.config.audio_dim):
            raise ValueError(f"audio must be [B={b}, T={t_all}, D_a={self.config.audio_dim}], got {tuple(batch.audio.shape)}")
        audio = self.audio_proj(batch.audio)
        if frame_ids is not None:
            frames, audio_frames = frames[:, frame_ids], audio[:, frame_ids]
        else:
            audio_frames = audio
        t = frames.shape[1]
        prefix, prompt_features = None, {}
        if self.visual_prompter is not None:
            prefix, prompt_features = getattr(self, METHOD_MODULES)[self.visual_prompter](batch)
            prefix = prefix.repeat_interleave(t, dim=0)  # clip-major, as the frames
        feats = self.visual(frames.flatten(0, 1), prefix_tokens=prefix)
        fused = self.fusion(feats.tokens, audio_frames.flatten(0, 1))
        h, w = feats.grid
        fused_map = fused.transpose(1, 2).reshape(b * t, -1, h, w)
        mask_logits = self.decode(fused_map, feats.maps, (height, width), batch.task_id, t)
        pooled = fused.mean(dim=1)
        class_logits = self.class_head(pooled) if self.class_head is not None else None
        features = dict(visual_tokens=feats.tokens, fused=fused, pooled=pooled, audio=audio,
                        visual_maps=feats.maps, grid=(h, w), **prompt_features)
        return ModelOutput(mask_logits=mask_logits, class_logits=class_logits, features=features, frame_ids=frame_ids)
