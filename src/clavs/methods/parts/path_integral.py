"""The Synaptic-Intelligence path integral (Zenke et al., 2017), shared by SI and ATLAS's LRA.

Along the optimisation trajectory of a task (or a consolidation period of a task-free stream),
every step adds  w += -g * dtheta  (g: the gradient of the task loss, the quadratic penalty's own
gradient taken out; dtheta: the step the optimiser actually made). At consolidation
Omega += relu(w) / ((theta_end - theta_start)^2 + xi), the anchors become theta_end, and the
penalty is  sum Omega (theta - theta*)^2  (QuadraticAnchor).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from clavs.methods.parts.quadratic import QuadraticAnchor


class PathIntegral:
    def __init__(self, named_params: list[tuple[str, nn.Parameter]], xi: float):
        self.anchors = QuadraticAnchor(named_params)
        self.params = self.anchors.params
        self.xi = xi
        self._start: dict[str, torch.Tensor] = {}
        self._prev: dict[str, torch.Tensor] = {}
        self._grad: dict[str, torch.Tensor] = {}
        self._w: dict[str, torch.Tensor] = {}
        self.begin()

    @property
    def omega(self) -> dict[str, torch.Tensor]:
        return self.anchors.importance

    def rebind(self, named_params: list[tuple[str, nn.Parameter]]) -> None:
        """Follow the network after a class head grew (see QuadraticAnchor.rebind); starts a new period."""
        self.anchors.rebind(named_params)
        self.params = self.anchors.params
        self.begin()

    def begin(self) -> None:
        """Start a new period: the trajectory is measured from here."""
        self._start = {n: p.detach().clone() for n, p in self.params.items()}
        self._prev = {n: p.detach().clone() for n, p in self.params.items()}
        self._w = {n: torch.zeros_like(p) for n, p in self.params.items()}

    def record_gradients(self, penalty_scale: float = 0.0) -> None:
        """Keep the task-loss gradient of this step (call after backward, before clipping): the
        penalty's gradient penalty_scale * 2 Omega (theta - theta*) is taken out analytically."""
        self._grad = {}
        for n, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad.detach().clone()
            if penalty_scale:
                pg = self.anchors.penalty_gradient(n)
                if pg is not None:
                    g -= penalty_scale * pg
            self._grad[n] = g

    def record_step(self) -> None:
        """After the optimiser step: w += -g * (theta_now - theta_before)."""
        for n, p in self.params.items():
            now = p.detach()
            if n in self._grad:
                self._w[n].add_(-self._grad[n] * (now - self._prev[n]))
            self._prev[n] = now.clone()

    def path(self) -> dict[str, torch.Tensor]:
        return self._w

    def consolidate(self) -> None:
        """Omega += relu(w) / (delta^2 + xi); anchors = now; then a new period begins."""
        new = {n: torch.relu(self._w[n]) / ((p.detach() - self._start[n]).pow(2) + self.xi)
               for n, p in self.params.items()}
        self.anchors.update(new)
        self.begin()

    def penalty(self) -> torch.Tensor | None:
        return self.anchors.penalty()

    def path_snapshot(self) -> dict[str, torch.Tensor]:
        return {n: w.clone() for n, w in self._w.items()}

    def restore_path(self, snapshot: dict[str, torch.Tensor]) -> None:
        """Back to an earlier point of the period (model selection restores that epoch's weights)."""
        self._w = {n: w.clone() for n, w in snapshot.items()}
        self._prev = {n: p.detach().clone() for n, p in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        # The running period too: a task-free stream is checkpointed in the middle of one.
        return {**self.anchors.state_dict(), "start": self._start, "w": self._w}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchors.load_state_dict(state)
        dev = {n: p.device for n, p in self.params.items()}
        self._start = {n: t.to(dev[n]) for n, t in state.get("start", {}).items()}
        self._w = {n: t.to(dev[n]) for n, t in state.get("w", {}).items()}
        self._prev = {n: p.detach().clone() for n, p in self.params.items()}
        if not self._start:
            self.begin()
