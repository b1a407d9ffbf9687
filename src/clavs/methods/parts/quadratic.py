"""Importance-weighted quadratic anchoring: penalty sum_i Omega_i (theta_i - theta*_i)^2."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class QuadraticAnchor:
    """Per-parameter importance Omega and anchors theta* for a fixed set of named parameters.

    update(new, keep, new_weight):  Omega <- keep * Omega + new_weight * new;  theta* <- theta now
        (online EWC: keep = gamma, new_weight = 1;  MAS: keep = alpha, new_weight = 1 - alpha;
         SI / LRA: keep = 1, new_weight = 1)
    penalty():  sum_i Omega_i (theta_i - theta*_i)^2   (None before the first update)
    penalty_gradient(name): its gradient 2 Omega (theta - theta*) for one parameter.
    """

    def __init__(self, named_params: list[tuple[str, nn.Parameter]]):
        self.params = dict(named_params)
        self.importance = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.params.items()}
        self.anchor: dict[str, torch.Tensor] = {}

    def rebind(self, named_params: list[tuple[str, nn.Parameter]]) -> None:
        """Follow the network after it changed (a class head that grew is a new parameter with more
        rows): old rows keep their importance and anchors, new rows and new parameters start with
        importance 0, anchored where they are."""
        old_imp, old_anchor = self.importance, self.anchor
        self.params = dict(named_params)
        self.importance, self.anchor = {}, {}
        for n, p in self.params.items():
            imp = torch.zeros_like(p, dtype=torch.float32)
            anc = p.detach().clone()
            if n in old_imp:
                rows = [slice(0, min(a, b)) for a, b in zip(old_imp[n].shape, p.shape)]
                imp[tuple(rows)] = old_imp[n][tuple(rows)]
                if n in old_anchor:
                    anc[tuple(rows)] = old_anchor[n][tuple(rows)]
            self.importance[n] = imp
            if old_anchor:
                self.anchor[n] = anc

    @property
    def active(self) -> bool:
        return bool(self.anchor)

    def update(self, new: dict[str, torch.Tensor], keep: float = 1.0, new_weight: float = 1.0) -> None:
        for n, p in self.params.items():
            if n in new:
                self.importance[n] = keep * self.importance[n] + new_weight * new[n].float()
            else:
                self.importance[n] = keep * self.importance[n]
            self.anchor[n] = p.detach().clone()

    def penalty(self) -> torch.Tensor | None:
        if not self.anchor:
            return None
        terms = [(self.importance[n] * (p - self.anchor[n]).pow(2)).sum() for n, p in self.params.items()]
        return torch.stack(terms).sum()

    def penalty_gradient(self, name: str) -> torch.Tensor | None:
        if name not in self.anchor:
            return None
        return 2 * self.importance[name] * (self.params[name].detach() - self.anchor[name])

    def state_dict(self) -> dict[str, Any]:
        return {"importance": self.importance, "anchor": self.anchor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = sorted(set(self.params) - set(state["importance"]))
        if missing:
            raise KeyError(f"importance state lacks parameters {missing[:3]}{'...' if len(missing) > 3 else ''}")
        self.importance = {n: state["importance"][n].to(self.params[n].device) for n in self.params}
        self.anchor = {n: t.to(self.params[n].device) for n, t in state["anchor"].items()}
