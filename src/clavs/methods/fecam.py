"""FeCAM (Goswami et al., NeurIPS 2023), adapted to AVS on the plain network: the network is trained on
the first task only, then frozen; class-wise Gaussians of its features (means, shrunk covariances
normalised to correlations) and Mahalanobis scores replace its heads (parts/closed_form.py,
parts/first_session.py); no gradient after the first session. FeCAM's ViT variant (features
L2-normalised, shrinkage a1 = 1, a2 = 0, correlation normalisation, no Tukey transform: the features
are not non-negative).

- Mask head: two Gaussians of the per-pixel decoder features, background and foreground, over every
  labelled pixel (d = the decoder's last width, so the sums are cheap); logit = (d_bg - d_fg) / 2, so
  that sigmoid > 0.5 iff the foreground is nearer: FeCAM's argmin rule.
- Class head: one Gaussian per class on the pooled fused features; a task's classes get theirs when
  the task ends and they never change (TIL: a clip is scored with its task's classes only).
"""

from __future__ import annotations

from dataclasses import dataclass

from clavs.methods.base import register
from clavs.methods.finetune import Finetune
from clavs.methods.parts import GaussianHead
from clavs.methods.parts.first_session import FirstSessionMethod


@dataclass
class FeCAMHparams:
    shrink1: float = 1.0         # a1: weight of mean(diag S) I in the shrinkage (the ViT variant's 1)
    shrink2: float = 0.0         # a2: weight of mean(offdiag S) (1 - I) (the ViT variant's 0)
    normalize_cov: bool = True   # normalise the shrunk covariance to a correlation matrix (norm_cov)
    consolidate_every: int = 0   # task-free streams: 0 = the first session is the stream's first task; N = its first N steps


@register
class FeCAM(FirstSessionMethod):
    """FeCAM: first-task training (TF-CL tells it that task's end and no other), then frozen features,
    class-wise shrunk Gaussians, Mahalanobis scores."""

    name = "fecam"
    family = "cl"
    trains = Finetune.trains  # the original trains its whole backbone on the first task
    Hparams = FeCAMHparams

    def new_head(self, kind, outputs):
        dim = self.pixel_dim if kind == "mask" else self.pooled_dim
        return GaussianHead(dim, 2 if kind == "mask" else outputs, self.hp.shrink1, self.hp.shrink2,
                            self.hp.normalize_cov, device=self.ctx.device)

    def head_from_state(self, kind, state):
        head = self.new_head(kind, int(state["outputs"]))
        head.load_state_dict(state)
        return head

    def mask_logit(self, head, x):
        scores = head.scores(x)  # -d / 2 for background (0) and foreground (1)
        return scores[:, 1] - scores[:, 0]
