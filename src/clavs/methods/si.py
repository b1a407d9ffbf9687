"""SI, Synaptic Intelligence (Zenke et al., 2017): importance accumulated along the optimisation
trajectory (parts/path_integral.py: w += -g dtheta every step; at the task's end Omega +=
relu(w) / (delta^2 + xi)); the loss adds c * sum Omega (theta - theta*)^2 over every trained
parameter. xi = 1.0 as Mammoth's best arguments; c = 5 chosen on validation data over {0.5 (Mammoth), 5}."""

from __future__ import annotations

from dataclasses import dataclass

from clavs.methods.base import register
from clavs.methods.finetune import Finetune
from clavs.methods.parts import PathIntegral


@dataclass
class SIHparams:
    si_c: float = 5.0            # penalty strength (validation grid; the original default 0.5 lost)
    xi: float = 1.0              # damping of the importance normaliser
    consolidate_every: int = 40  # task-free streams: training steps between consolidations


class PathIntegralMethod(Finetune):
    """Training with a path-integral anchor on `anchored_parameters()` (SI; ATLAS's LRA): the
    bookkeeping of the hooks, written once. Subclasses set `penalty_name` and `strength()`."""

    penalty_name = "si"

    def make_path_integral(self) -> PathIntegral | None:
        return PathIntegral(self.anchored_parameters(), self.hp.xi)

    def strength(self) -> float:
        raise NotImplementedError

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.path = self.make_path_integral()

    def begin_task(self, task):
        super().begin_task(task)
        if self.path:
            self.path.rebind(self.anchored_parameters())

    def training_step(self, batch, model):
        terms = super().training_step(batch, model)
        penalty = self.path.penalty() if self.path else None
        if penalty is not None:
            terms[self.penalty_name] = self.strength() * penalty
        return terms

    def after_backward(self):
        if self.path:  # raw gradients, before clipping; the penalty's share is taken out
            self.path.record_gradients(self.strength())

    def after_step(self):
        if self.path:
            self.path.record_step()

    def selection_state(self):
        return self.path.path_snapshot() if self.path else None

    def restore_selection_state(self, state):
        if self.path and state is not None:  # importance of the path up to the selected epoch
            self.path.restore_path(state)

    def consolidate(self, data):
        if self.path:
            self.path.consolidate()

    def state_dict(self):
        return {"path": self.path.state_dict()} if self.path else {}

    def load_state_dict(self, state):
        if self.path and "path" in state:
            self.path.load_state_dict(state["path"])


@register
class SI(PathIntegralMethod):
    name = "si"
    family = "cl"
    Hparams = SIHparams

    def strength(self) -> float:
        return self.hp.si_c
