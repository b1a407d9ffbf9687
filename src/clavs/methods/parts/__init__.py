"""Mechanisms several methods share, each written once: the SI path integral (SI, ATLAS's LRA),
quadratic anchoring to importance-weighted anchors (EWC, SI, MAS, LRA), per-clip importance passes
(Fisher for EWC, output sensitivity for MAS), a frozen teacher (LwF and the distillation methods),
running feature statistics, and closed-form heads on frozen features (RanPAC's ridge regression on
random projections, FeCAM's Gaussians; their shared schedule is parts/first_session.py)."""

from clavs.methods.parts.closed_form import GaussianHead, RidgeHead, probability_logit, random_projection
from clavs.methods.parts.importance import clip_gradient_statistic, fisher_diagonal, output_sensitivity
from clavs.methods.parts.path_integral import PathIntegral
from clavs.methods.parts.quadratic import QuadraticAnchor
from clavs.methods.parts.statistics import RunningMoments
from clavs.methods.parts.teacher import FrozenTeacher

__all__ = ["FrozenTeacher", "GaussianHead", "PathIntegral", "QuadraticAnchor", "RidgeHead", "RunningMoments",
           "clip_gradient_statistic", "fisher_diagonal", "output_sensitivity", "probability_logit", "random_projection"]
