"""The contract every network honours, so that methods, the engine and evaluation never look inside one.

A network for clavs is an `nn.Module` with:

    forward(batch: Batch) -> ModelOutput
        mask logits for the batch's decoded frames (`batch.decoded_frames`), class logits over the
        classes seen so far where it has a class head, and named features.
    named_parameter_groups() -> {group: [(qualified name, parameter), ...]}
        every parameter in exactly one group; methods choose what trains by group name.
    num_classes: int                      size of the class head (0: none yet, or none at all)
    add_classes(n)                        grow the class head by n outputs, old rows kept exactly
    num_task_heads: int                   per-task mask heads (TIL's multi-head reading), 0: one shared head
    add_task_head()                       a head for a new task, chosen at forward by `batch.task_id`

`SegmentationNet` (architectures/base.py) implements the last four and the grouping once; AtlasNet
and PlainAVSNet subclass it. A network with its own design only needs to honour this protocol.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import nn

from clavs.batch import Batch, ModelOutput


@runtime_checkable
class AVSModel(Protocol):
    num_classes: int
    num_task_heads: int

    def __call__(self, batch: Batch) -> ModelOutput: ...

    def named_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]: ...

    def add_classes(self, n: int) -> None: ...

    def add_task_head(self) -> None: ...
