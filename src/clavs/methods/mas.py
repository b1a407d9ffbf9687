"""MAS, Memory Aware Synapses (Aljundi et al., 2018): after each task, the importance of a parameter
is the mean over the task's clips of |d ||f(x)||^2 / d theta| — how much the network's outputs move
with it, labels unused (f: mask logits and class logits, parts/importance.py); Omega <- alpha Omega +
(1 - alpha) Omega_new (Avalanche's online form); the loss adds lambda * sum Omega (theta - theta*)^2.
Defaults as Avalanche: lambda = 1, alpha = 0.5; lambda is then chosen on a validation grid."""

from __future__ import annotations

from dataclasses import dataclass

from clavs.methods.base import register
from clavs.methods.ewc import EWC
from clavs.methods.parts import output_sensitivity


@dataclass
class MASHparams:
    mas_lambda: float = 1.0      # penalty strength (validation grid)
    alpha: float = 0.5           # weight of the previous importance
    consolidate_every: int = 40  # task-free streams: training steps between importance passes


@register
class MAS(EWC):
    name = "mas"
    Hparams = MASHparams

    penalty_name = "mas"

    def strength(self) -> float:
        return self.hp.mas_lambda

    def consolidate(self, data):
        omega = output_sensitivity(self.model, self.ctx.shard(data), self.anchor.params, autocast=self.ctx.autocast,
                                   reduce=self.ctx.all_reduce_sum)  # each process its share, sums added up
        first = not self.anchor.active
        # The first task's importance is taken whole (there is no previous one to average with).
        self.anchor.update(omega, keep=0.0 if first else self.hp.alpha, new_weight=1.0 if first else 1 - self.hp.alpha)
