"""RanPAC (McDonnell et al., NeurIPS 2023), adapted to AVS on the plain network: a first session of
parameter-efficient tuning, then frozen features, a random ReLU projection h = relu(x W_rand) and ridge
heads W = (G + lambda I)^-1 Q fitted in closed form from accumulated sums (parts/closed_form.py,
parts/first_session.py); no gradient after the first session.

- First session (task 0, in a task-free stream too: parts/first_session.py): the network's
  new parts (audio projection, fusion, decoder, heads) and, in the pretrained visual encoder, only the
  scale and shift of its LayerNorms: the plain ViT has no adapters, and these are its SSF-like
  parameters (the original tunes SSF/adapters of the ViT and keeps its weights).
- Mask head: per pixel (frozen decoder features, 16 wide), its own projection of `mask_rp_dim` = 256
  (16x its input, near the original's 768 -> 10000; every pixel of every evaluated frame is projected),
  target = the foreground indicator; a sample of `pixels_per_frame` pixels per labelled frame feeds G
  (its cost is rows x M^2); the logit is probability_logit(h W), whose sigmoid is the regressed
  probability.
- Class head: TIL one ridge head per task over its classes; CIL one head over all seen classes whose
  G and Q accumulate over tasks and which is refitted after each (the original).
- lambda in 10^-8..10^8 by the mean squared error on the task's validation clips (a task-free stream:
  every 5th clip of the first session held out, the original's 80/20 split).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from clavs.methods.base import register
from clavs.methods.parts import RidgeHead, probability_logit, random_projection
from clavs.methods.parts.first_session import FirstSessionMethod


@dataclass
class RanPACHparams:
    rp_dim: int = 1024           # M of the class head's projection (the original 10000; G is M x M)
    mask_rp_dim: int = 256       # M of the mask head's projection: 16x the decoder's 16-wide pixel features
    pixels_per_frame: int = 256  # pixels per labelled frame in the mask head's statistics (0: all)
    consolidate_every: int = 0   # task-free streams: 0 = the first session is the stream's first task; N = its first N steps


@register
class RanPAC(FirstSessionMethod):
    """RanPAC: first-session tuning (the first task; TF-CL tells it that task's end and no other), then
    frozen features, random ReLU projection, closed-form ridge heads."""

    name = "ranpac"
    family = "cl"
    trains = ("audio_proj", "fusion", "decoder", "mask_head", "class_head")
    needs_held_out = True
    Hparams = RanPACHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        for key in ("rp_dim", "mask_rp_dim"):
            if getattr(hparams, key) < 1:
                raise ValueError(f"method.{key}={getattr(hparams, key)} must be at least 1")
        g = torch.Generator().manual_seed(self.seed)
        self.w_rand = {"mask": random_projection(self.pixel_dim, hparams.mask_rp_dim, g, ctx.device),
                       "class": random_projection(self.pooled_dim, hparams.rp_dim, g, ctx.device)}

    def trainable_parameters(self):
        params = super().trainable_parameters()
        if not self.trained_groups():
            return params
        scale_shift = [p for m in self.model.visual.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
        for p in scale_shift:
            p.requires_grad_(True)
        return params + scale_shift

    def new_head(self, kind, outputs):
        if kind == "mask":
            return RidgeHead(self.w_rand["mask"], 1, binary=True)
        return RidgeHead(self.w_rand["class"], outputs)

    def head_from_state(self, kind, state):
        return RidgeHead.from_state(state, self.w_rand[kind])

    def mask_logit(self, head, x):
        return probability_logit(head.scores(x)[:, 0])

    def class_head_key(self, task_id):
        return f"task{task_id}" if self.scenario.protocol == "til" else "all"

    def class_head_classes(self, task):
        return list(task.class_indices) if self.scenario.protocol == "til" else list(range(task.num_seen_classes))

    def keeps_statistics(self, kind, key):
        return kind == "class" and key == "all"

    def pixels_per_frame(self):
        return self.hp.pixels_per_frame

    def state_dict(self):
        return {**super().state_dict(), "w_rand": dict(self.w_rand)}

    def load_state_dict(self, state):
        self.w_rand = {k: v.to(self.ctx.device) for k, v in state["w_rand"].items()}
        super().load_state_dict(state)
