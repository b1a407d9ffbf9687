"""ATLAS: LoRA-adapted visual encoder, audio-guided pre-fusion conditioning, cross-attention fusion,
LoRA-adapted decoder, and Low-Rank Anchoring (LRA) against drift of the adapted weights.

LRA (reference/atlas.md, "ours"): importance is the Synaptic-Intelligence path integral, accumulated
along the optimisation trajectory: every step w += -g * dtheta; at task end
Omega += relu(w) / ((theta_end - theta_start)^2 + xi), anchors theta* = theta_end; penalty
lambda * sum(Omega * (theta - theta*)^2) on the anchored groups (LoRA matrices and decoder weights).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from clavs.methods.base import Method, register, task_loss


@dataclass
class AtlasHparams:
    lra: bool = True                 # Low-Rank Anchoring on/off (ablation: method.lra=false)
    pre_conditioning: bool = True    # audio-guided pre-fusion conditioning on/off (ablation)
    lra_lambda: float = 20.0         # strength of the anchoring penalty (see docs/reproducibility.md)
    lra_xi: float = 1e-3             # damping of the importance normaliser
    # What LRA anchors: the LoRA matrices and decoder weights (the paper) and, ours, the small fusion
    # modules in front of them, which otherwise drift freely and carry most of the forgetting.
    lra_groups: list[str] = field(default_factory=lambda: [
        "visual_lora", "decoder", "decoder_lora", "audio_proj", "conditioning", "fusion"])


class PathIntegralAnchor:
    """SI-style importance and anchors for a fixed set of named parameters (reused by SI-like methods)."""

    def __init__(self, named_params: list[tuple[str, torch.nn.Parameter]], xi: float):
        self.params = dict(named_params)
        self.xi = xi
        self.omega = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.anchor: dict[str, torch.Tensor] = {}
        self._start: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}
        self._w: dict[str, torch.Tensor] = {}

    def begin(self) -> None:
        self._start = {n: p.detach().clone() for n, p in self.params.items()}
        self._prev = {n: p.detach().clone() for n, p in self.params.items()}
        self._w = {n: torch.zeros_like(p) for n, p in self.params.items()}

    def record_gradients(self, penalty_scale: float = 0.0) -> None:
        """Keep the task-loss gradient: the penalty's own gradient 2*scale*Omega*(theta - theta*) is
        taken out analytically, so importance measures the task loss only (as SI does)."""
        self._grad = {}
        for n, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if penalty_scale and n in self.anchor:
                g -= 2 * penalty_scale * self.omega[n] * (p.detach() - self.anchor[n])
            self._grad[n] = g

    def record_step(self) -> None:
        for n, p in self.params.items():
            now = p.detach()
            if n in self._grad:
                self._w[n].add_(-self._grad[n] * (now - self._prev[n]))
            self._prev[n] = now.clone()

    def consolidate(self) -> None:
        for n, p in self.params.items():
            delta2 = (p.detach() - self._start[n]).pow(2)
            self.omega[n].add_(torch.relu(self._w[n]) / (delta2 + self.xi))
            self.anchor[n] = p.detach().clone()

    def path_snapshot(self) -> dict[str, torch.Tensor]:
        return {n: w.clone() for n, w in self._w.items()}

    def restore_path(self, snapshot: dict[str, torch.Tensor]) -> None:
        self._w = {n: w.clone() for n, w in snapshot.items()}

    def penalty(self) -> torch.Tensor | None:
        if not self.anchor:
            return None
        terms = [(self.omega[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items()]
        return torch.stack(terms).sum()

    def state_dict(self) -> dict[str, Any]:
        return {"omega": self.omega, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.omega = {n: state["omega"][n].to(self.params[n].device) for n in self.params}
        self.anchor = {n: t.to(self.params[n].device) for n, t in state["anchor"].items()}


@register
class Atlas(Method):
    name = "atlas"
    trains = ("visual_lora", "audio_proj", "conditioning", "fusion", "decoder", "decoder_lora", "class_head")
    Hparams = AtlasHparams

    @classmethod
    def build_model(cls, config, scenario, audio_dim):
        from clavs.models.build import build_atlas_net

        return build_atlas_net(config, scenario, audio_dim, pre_conditioning=config["method"]["pre_conditioning"])

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        groups = self.parameter_groups()
        unknown = [g for g in hparams.lra_groups if g not in groups]
        if unknown:
            raise ValueError(f"method.lra_groups names unknown parameter groups {unknown}; groups: {sorted(groups)}")
        anchored = [np for g in hparams.lra_groups for np in groups[g]]
        self.lra = PathIntegralAnchor(anchored, hparams.lra_xi) if hparams.lra and anchored else None

    def begin_task(self, task):
        super().begin_task(task)
        if self.lra:
            self.lra.begin()

    def loss(self, batch, out):
        terms = task_loss(batch, out, self.scenario, self.task)
        if self.lra:
            penalty = self.lra.penalty()
            if penalty is not None:
                terms["lra"] = self.hp.lra_lambda * penalty
        return terms

    def after_backward(self):
        if self.lra:
            self.lra.record_gradients(self.hp.lra_lambda)

    def after_step(self):
        if self.lra:
            self.lra.record_step()

    def selection_state(self):
        return self.lra.path_snapshot() if self.lra else None

    def restore_selection_state(self, state):
        if self.lra and state is not None:  # importance of the path up to the selected epoch
            self.lra.restore_path(state)

    def end_task(self, task, loader):
        if self.lra:
            self.lra.consolidate()

    def state_dict(self):
        return {"lra": self.lra.state_dict()} if self.lra else {}

    def load_state_dict(self, state):
        if self.lra and "lra" in state:
            self.lra.load_state_dict(state["lra"])
