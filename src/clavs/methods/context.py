"""What the engine gives a method: the device, distributed reductions, autocast, the config, a log,
and read access to the current task's data. Methods import this, never the engine."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch

from clavs.batch import Batch


class TaskData:
    """Clips the engine hands a method (end_task's and consolidate's `data`, ctx.data(split)).
    Iterating yields prepared batches of every clip, the same on every process; `shard()` yields
    only this process's share (disjoint across processes, together every clip once), for passes
    whose sums are then added up with MethodContext.all_reduce_sum."""

    def __init__(self, batches: Callable[[bool], Iterable[Batch]]):
        self._batches = batches  # batches(shard) -> batches of every clip / of this process's share

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches(False))

    def shard(self) -> Iterable[Batch]:
        return self._batches(True)


@dataclass
class MethodContext:
    fabric: Any  # lightning_fabric.Fabric
    config: dict[str, Any]
    log: Callable[[str], None] = field(default=print)
    # Set by the engine: prepared (device, float) batches of a split's clips of the current task (or,
    # in a task-free stream, of the clips seen since the last consolidation); model mode untouched.
    data_source: Callable[[str], TaskData] | None = None
    task_free: bool = False  # a task-free stream: no boundaries are revealed to the method

    @property
    def device(self) -> torch.device:
        return self.fabric.device

    @property
    def world_size(self) -> int:
        return self.fabric.world_size

    @property
    def rank(self) -> int:
        """This process's index (0..world_size-1): a statistics pass over unsharded data can take its share."""
        return self.fabric.global_rank

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a statistic (Fisher, path integral, prototype sums, ...) over all processes."""
        if self.fabric.world_size == 1:
            return tensor
        return self.fabric.all_reduce(tensor, reduce_op="sum")

    def shard(self, data: Iterable[Batch]) -> Iterable[Batch]:
        """This process's share of `data` (all of it in a single process). A statistic summed over
        the share must go through all_reduce_sum, which then makes it the sum over every clip."""
        if self.world_size == 1:
            return data
        if not isinstance(data, TaskData):
            raise TypeError(f"ctx.shard needs the engine's TaskData (end_task/consolidate data or ctx.data), "
                            f"got {type(data).__name__}: other data cannot be split between the {self.world_size} "
                            f"processes without counting clips twice")
        return data.shard()

    def autocast(self) -> ContextManager:
        """The run's precision context (bf16/16-mixed autocast), for forwards outside the wrapped model."""
        return self.fabric.autocast() if self.fabric is not None else contextlib.nullcontext()

    def data(self, split: str = "train") -> Iterable[Batch]:
        """The current task's clips of `split` ('train', 'val') as prepared batches (a TaskData)."""
        if self.data_source is None:
            raise RuntimeError("no task data is available outside training")
        return self.data_source(split)
