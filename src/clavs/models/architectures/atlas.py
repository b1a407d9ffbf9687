"""The ATLAS network (Adaptive Task Learning with Anchored Stability): the nn.Module only.

Data flow per frame (shared/reference/atlas.md; every "ours" choice is a field of AtlasNetConfig):

    batch.frames [B,T,3,H,W] --LoRA-adapted frozen ViT/PVT--> tokens v [BT,N,C_v] + skip maps
    audio_emb [B,T,D_a] --Linear+LayerNorm--> a [B,T,d]             (cached frozen PANN embeddings)
    pre-fusion conditioning:  gamma, beta = MLP(a_t);  v' = (1 + gamma) v + beta     (switchable)
    cross-attention fusion:   z = LN(q + softmax(q K^T / sqrt(d_head)) V),  q = Linear(v'),
                              K, V from the clip's T audio tokens ('clip') or the frame's own ('frame')
    decoder: progressive x2 upsampling of z with encoder skips, LoRA on its convs -> mask logits [BT,1,H,W]
    class head: mean over z's tokens -> Linear -> class logits [BT,C] (growable with add_classes)
    TIL: one mask head per task (models/architectures/base.py), chosen by batch.task_id

The training objective, Low-Rank Anchoring and the continual method live elsewhere (methods/).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from clavs.batch import Batch, ModelOutput
from clavs.models.architectures.base import SegmentationNet
from clavs.models.decoders import build_decoder
from clavs.models.encoders.lora import apply_lora
from clavs.models.encoders.visual import VisualEncoder, create_visual_encoder
from clavs.models.fusion import AudioConditioning, CrossModalAttentionFusion

__all__ = ["AtlasNetConfig", "AtlasNet", "PARAMETER_GROUPS"]

PARAMETER_GROUPS = ("visual", "visual_lora", "audio_proj", "conditioning", "fusion", "decoder", "decoder_lora",
                    "mask_head", "class_head")

_DEFAULT_LORA_TARGETS = {"vit": ("qkv",), "pvt_v2": ("q", "kv")}  # Q/V of every attention block


@dataclass
class AtlasNetConfig:
    """Architecture hyper-parameters of :class:`AtlasNet` (all YAML-serialisable)."""

    # visual encoder
    visual: str = "tiny"                      # VISUAL_PRESETS name or timm model name
    visual_weights: str | None = None         # None (random), a local file, or 'hub'
    img_size: int | None = None               # None: the preset's
    visual_out_indices: tuple[int, ...] | None = None  # taps feeding the decoder; None: the preset's
    visual_kwargs: dict[str, Any] = field(default_factory=dict)
    normalize_input: bool = True              # frames arrive in [0, 1]
    # audio (the model receives cached embeddings of a frozen audio encoder, one per frame-second)
    audio_dim: int = 128
    # width and fusion
    dim: int = 128
    num_heads: int = 4
    attn_dropout: float = 0.0
    audio_context: str = "clip"               # 'clip': K/V = the clip's T audio tokens; 'frame': its own only
    pre_conditioning: bool = True
    conditioning_hidden: int | None = None    # None: dim
    # LoRA on the visual encoder
    visual_lora: bool = True
    lora_r: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    lora_targets: tuple[str, ...] | None = None  # None: Q/V of attention ('qkv' ViT, 'q'+'kv' PVT-v2)
    lora_qv_only: bool = True
    # decoder
    decoder: str = "progressive"
    decoder_dim: int = 64
    decoder_min_dim: int = 16
    decoder_lora: bool = True
    decoder_lora_r: int | None = None         # None: lora_r
    decoder_lora_alpha: float | None = None   # None: lora_alpha
    decoder_base_trainable: bool = True       # the decoder is trained from scratch, so its weights train too
    # class head
    use_class_head: bool = True
    num_classes: int = 0
    task_heads: bool = False                  # TIL: one mask head per task, chosen by batch.task_id

    def __post_init__(self) -> None:
        if self.audio_context not in ("clip", "frame"):
            raise ValueError(f"audio_context must be 'clip' or 'frame', got {self.audio_context!r}")
        for name in ("audio_dim", "dim", "num_heads", "decoder_dim"):
            if getattr(self, name) <= 0:
                raise ValueError(f"AtlasNetConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.num_classes < 0:
            raise ValueError(f"AtlasNetConfig.num_classes must be >= 0, got {self.num_classes}")
        if self.visual_out_indices is not None:
            self.visual_out_indices = tuple(self.visual_out_indices)
        if self.lora_targets is not None:
            self.lora_targets = (self.lora_targets,) if isinstance(self.lora_targets, str) else tuple(self.lora_targets)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "AtlasNetConfig":
        """Build from a (YAML) mapping; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown AtlasNetConfig key(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, tuple):
                out[k] = list(v)
        return out


class AtlasNet(SegmentationNet):
    """ATLAS network. ``forward(batch)`` -> ModelOutput with ``mask_logits [B*t,1,H,W]`` for the batch's
    decoded frames, ``class_logits [B*t,C]`` (None without a head or with C == 0) and ``features``
    (``visual_tokens``, ``conditioned``, ``fused`` [B*t,N,*], ``pooled`` [B*t,d], ``audio`` [B,T,d],
    ``visual_maps`` list, ``grid`` (h, w)).

    Trainable at construction: LoRA matrices of the encoder (its base is frozen), audio projection,
    conditioning, fusion, decoder (base and LoRA) and class head. See :meth:`named_parameter_groups`.
    """

    GROUPS = {"visual": "visual", "audio_proj": "audio_proj", "conditioning": "conditioning", "fusion": "fusion",
              "decoder": "decoder", "mask_heads": "mask_head", "class_head": "class_head"}
    LORA_GROUPS = ("visual", "decoder")
    GROUP_ORDER = PARAMETER_GROUPS

    def __init__(self, config: AtlasNetConfig | None = None, visual: VisualEncoder | None = None):
        super().__init__()
        self.config = cfg = config or AtlasNetConfig()
        self.visual = visual if visual is not None else create_visual_encoder(
            cfg.visual, weights=cfg.visual_weights, img_size=cfg.img_size, out_indices=cfg.visual_out_indices,
            normalize_input=cfg.normalize_input, **cfg.visual_kwargs)
        self.visual.requires_grad_(False)
        if cfg.visual_lora:
            targets = cfg.lora_targets or _DEFAULT_LORA_TARGETS[self.visual.family]
            apply_lora(self.visual, targets, r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                       qv_only=cfg.lora_qv_only)

        d, c_v = cfg.dim, self.visual.token_dim
        self.audio_proj = nn.Sequential(nn.Linear(cfg.audio_dim, d), nn.LayerNorm(d))
        self.conditioning = AudioConditioning(d, c_v, cfg.conditioning_hidden or d) if cfg.pre_conditioning else None
        self.fusion = CrossModalAttentionFusion(c_v, d, cfg.num_heads, cfg.attn_dropout)
        self.decoder = build_decoder(cfg.decoder, in_dim=d, in_reduction=self.visual.token_reduction,
                                     skip_channels=self.visual.channels, skip_reductions=self.visual.reductions,
                                     dim=cfg.decoder_dim, min_dim=cfg.decoder_min_dim, out_channels=1)
        self.decoder.requires_grad_(cfg.decoder_base_trainable)
        if cfg.decoder_lora:
            apply_lora(self.decoder, self.decoder.lora_target_names(), r=cfg.decoder_lora_r or cfg.lora_r,
                       alpha=cfg.decoder_lora_alpha or cfg.lora_alpha, dropout=cfg.lora_dropout,
                       freeze_base=not cfg.decoder_base_trainable)
        self._init_heads(d, cfg.use_class_head, cfg.num_classes, cfg.task_heads)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch) -> ModelOutput:
        """Decodes `batch.decoded_frames` of every clip; the audio context is always the whole clip."""
        frames, audio_emb, frame_ids = batch.frames, batch.audio, batch.frame_ids
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be [B, T, 3, H, W], got {tuple(frames.shape)}")
        b, t_all, _, height, width = frames.shape
        if audio_emb.shape != (b, t_all, self.config.audio_dim):
            raise ValueError(f"audio must be [B={b}, T={t_all}, D_a={self.config.audio_dim}] "
                             f"(cached audio embeddings), got {tuple(audio_emb.shape)}")
        audio = self.audio_proj(audio_emb)                        # [B, T, d]
        if frame_ids is not None:
            frames = frames[:, frame_ids]
        t = frames.shape[1]
        feats = self.visual(frames.flatten(0, 1))
        audio_per_frame = (audio if frame_ids is None else audio[:, frame_ids]).flatten(0, 1)  # [B*t, d]
        v = feats.tokens
        v_cond = self.conditioning(v, audio_per_frame) if self.conditioning is not None else v
        if self.config.audio_context == "clip":
            keys = audio.repeat_interleave(t, dim=0)              # frame (b, i) attends to clip b's T tokens
        else:
            keys = audio_per_frame[:, None, :]
        fused = self.fusion(v_cond, keys)                         # [B*t, N, d]
        h, w = feats.grid
        fused_map = fused.transpose(1, 2).reshape(b * t, -1, h, w)
        mask_logits = self.decode(fused_map, feats.maps, (height, width), batch.task_id, t)
        pooled = fused.mean(dim=1)
        class_logits = self.class_head(pooled) if self.class_head is not None else None
        features = dict(visual_tokens=v, conditioned=v_cond, fused=fused, pooled=pooled, audio=audio,
                        visual_maps=feats.maps, grid=(h, w))
        return ModelOutput(mask_logits=mask_logits, class_logits=class_logits, features=features, frame_ids=frame_ids)
