"""Audio-visual fusion blocks of ATLAS: audio-guided pre-fusion conditioning and cross-attention fusion.

Shapes: visual tokens ``v [N, L, C_v]`` (N frames, L = h*w tokens), audio ``a [N, D_a]`` (one vector per
frame) or audio tokens ``[N, S, d]`` (S keys per frame).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["AudioConditioning", "CrossModalAttentionFusion"]


class AudioConditioning(nn.Module):
    """Feature-level gate: ``gamma, beta = MLP(a)``, ``v' = (1 + gamma) * v + beta`` (FiLM-style, per channel).

    The MLP's last layer starts at zero, so at initialisation ``v' == v`` exactly: the block can only
    move away from the pretrained features as training asks it to.
    """

    def __init__(self, audio_dim: int, visual_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or audio_dim
        self.visual_dim = visual_dim
        self.mlp = nn.Sequential(nn.Linear(audio_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, 2 * visual_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def modulation(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gamma, beta)``, each ``[N, C_v]``."""
        gamma, beta = self.mlp(a).chunk(2, dim=-1)
        return gamma, beta

    def forward(self, v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        if v.dim() != 3 or a.dim() != 2 or v.shape[0] != a.shape[0] or v.shape[-1] != self.visual_dim:
            raise ValueError(f"conditioning expects v [N, L, {self.visual_dim}] and a [N, D], "
                             f"got {tuple(v.shape)} and {tuple(a.shape)}")
        gamma, beta = self.modulation(a)
        return (1 + gamma[:, None, :]) * v + beta[:, None, :]


class CrossModalAttentionFusion(nn.Module):
    """``z = LN(q + MHA(Q=q, K=audio, V=audio))`` with ``q = Linear(v')`` (visual tokens moved to width d).

    Queries come from the (conditioned) visual tokens, keys and values from the audio tokens; scaled
    dot-product softmax attention per head (``nn.MultiheadAttention``), residual, LayerNorm.
    Note: with a single audio key per frame the softmax weight is 1 for every query, so the block
    reduces to adding a projected audio vector to every token; several keys (the clip's seconds)
    make the attention query-dependent.
    """

    def __init__(self, visual_dim: int, dim: int, num_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"fusion width {dim} must be divisible by num_heads={num_heads}")
        self.visual_proj = nn.Linear(visual_dim, dim)
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)

    def forward(self, v: torch.Tensor, audio_tokens: torch.Tensor) -> torch.Tensor:
        """``v [N, L, C_v]``, ``audio_tokens [N, S, d]`` -> fused tokens ``[N, L, d]``."""
        if audio_tokens.dim() != 3 or audio_tokens.shape[0] != v.shape[0]:
            raise ValueError(f"audio tokens must be [N={v.shape[0]}, S, d], got {tuple(audio_tokens.shape)}")
        q = self.visual_proj(v)
        attended, _ = self.attn(q, audio_tokens, audio_tokens, need_weights=False)
        return self.norm(q + attended)
