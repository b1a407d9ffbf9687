"""What the engine hands to a method: devices, distributed reductions, config, logging."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class EngineContext:
    fabric: Any  # lightning_fabric.Fabric
    config: dict[str, Any]
    log: Callable[[str], None] = field(default=print)

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a statistic (Fisher, path integral, prototype sums, ...) over all processes."""
        if self.fabric.world_size == 1:
            return tensor
        return self.fabric.all_reduce(tensor, reduce_op="sum")
