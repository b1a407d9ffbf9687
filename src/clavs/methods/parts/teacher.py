"""A frozen copy of the network: the teacher of LwF and of the distillation methods."""

from __future__ import annotations

import copy
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from clavs.batch import Batch, ModelOutput


class FrozenTeacher:
    """teacher = a copy of the network at refresh() time; never trained, always in eval mode.

    Its forward runs without gradients under the run's autocast (pass MethodContext.autocast), so it
    sees the same precision as the student's forward through the engine's wrapped network.
    """

    def __init__(self, autocast: Callable[[], ContextManager] | None = None):
        self.net: nn.Module | None = None
        self._autocast = autocast

    @property
    def ready(self) -> bool:
        return self.net is not None

    def refresh(self, model: nn.Module) -> None:
        self.net = copy.deepcopy(model).eval()
        self.net.requires_grad_(False)

    @torch.no_grad()
    def __call__(self, batch: Batch) -> ModelOutput:
        if self.net is None:
            raise RuntimeError("the teacher has not been set (refresh(model) after the first task)")
        if self._autocast is not None:
            with self._autocast():
                return self.net(batch)
        return self.net(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.net.state_dict()} if self.net is not None else {}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Rebuild from the network's structure (`model`), then load the teacher's own weights."""
        if not state:
            self.net = None
            return
        self.refresh(model)
        self.net.load_state_dict(state["weights"])
