"""Online EWC (Kirkpatrick et al., 2017, in the online form of Schwarz et al., 2018): after each task
an empirical Fisher F over the task's training clips (squared per-clip gradients of the task loss);
F <- gamma F + F_new; the loss adds lambda * sum F (theta - theta*)^2 over every trained parameter,
theta* = the weights after the task. gamma = 1 as Mammoth's ewc_on; lambda from a validation grid."""

from __future__ import annotations

from dataclasses import dataclass

from clavs.methods.base import register
from clavs.methods.finetune import Finetune
from clavs.methods.parts import QuadraticAnchor, fisher_diagonal


@dataclass
class EWCHparams:
    ewc_lambda: float = 10000.0  # penalty strength (validation grid; Fisher values are small here)
    gamma: float = 1.0           # decay of the previous Fisher (online EWC)
    consolidate_every: int = 40  # task-free streams: training steps between Fisher passes


@register
class EWC(Finetune):
    name = "ewc"
    family = "cl"
    Hparams = EWCHparams

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.anchor = QuadraticAnchor(self.anchored_parameters())

    def begin_task(self, task):
        super().begin_task(task)
        self.anchor.rebind(self.anchored_parameters())

    penalty_name = "ewc"

    def strength(self) -> float:
        return self.hp.ewc_lambda

    def training_step(self, batch, model):
        terms = super().training_step(batch, model)
        penalty = self.anchor.penalty()
        if penalty is not None:
            terms[self.penalty_name] = self.strength() * penalty
        return terms

    def consolidate(self, data):
        # Each process takes its share of the clips; the sums are added up across processes.
        fisher = fisher_diagonal(self.model, self.ctx.shard(data), self.anchor.params, self.task_loss,
                                 autocast=self.ctx.autocast, reduce=self.ctx.all_reduce_sum)
        self.anchor.update(fisher, keep=self.hp.gamma)

    def state_dict(self):
        return {"anchor": self.anchor.state_dict()}

    def load_state_dict(self, state):
        self.anchor.load_state_dict(state["anchor"])
