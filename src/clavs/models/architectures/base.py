"""What the AVS networks share: a class head that grows with the classes, per-task mask heads for
TIL (the multi-head reading: the task id chooses the mask head), and parameter groups by module."""

from __future__ import annotations

import copy
from typing import ClassVar

import torch
from torch import nn

from clavs.models.encoders.lora import is_lora_parameter_name

# Modules a method attaches to a network (prompts, adapters) live under this name; the method, not
# the network, groups their parameters (methods/base.py: Method.register_module).
METHOD_MODULES = "method_modules"


class SegmentationNet(nn.Module):
    """Base of the AVS networks. Subclasses set `GROUPS` (top-level module -> parameter group; LoRA
    parameters of a module in `LORA_GROUPS` go to `<group>_lora`), build `self.decoder` (with a
    `features(x, skips)` / `logits(features, out_size, head)` split) and call `_init_heads`."""

    GROUPS: ClassVar[dict[str, str]] = {}
    LORA_GROUPS: ClassVar[tuple[str, ...]] = ()
    GROUP_ORDER: ClassVar[tuple[str, ...]] = ()  # the order named_parameter_groups lists them (default: GROUPS')

    def _init_heads(self, dim: int, use_class_head: bool, num_classes: int, task_heads: bool) -> None:
        self._head_dim = dim
        self._use_class_head = use_class_head
        self.class_head: nn.Linear | None = nn.Linear(dim, num_classes) if use_class_head and num_classes > 0 else None
        # TIL: one output conv per task (the decoder's own head becomes task 0's), chosen by batch.task_id.
        self.mask_heads: nn.ModuleList | None = None
        if task_heads:
            self.mask_heads = nn.ModuleList([self.decoder.head])
            self.decoder.head = None

    # ---------------------------------------------------------------- heads
    @property
    def num_classes(self) -> int:
        return 0 if self.class_head is None else self.class_head.out_features

    def add_classes(self, n: int) -> None:
        """Grow the class head by `n` outputs; existing rows are kept exactly (rebuild the optimiser)."""
        if not self._use_class_head:
            raise ValueError(f"add_classes: this {type(self).__name__} was built without a class head (use_class_head=False)")
        if n <= 0:
            raise ValueError(f"add_classes needs n > 0, got {n}")
        old = self.class_head
        ref = next(self.parameters())
        new = nn.Linear(self._head_dim, self.num_classes + n, device=ref.device, dtype=ref.dtype)
        if old is not None:
            with torch.no_grad():
                new.weight[: old.out_features].copy_(old.weight)
                new.bias[: old.out_features].copy_(old.bias)
            new.requires_grad_(old.weight.requires_grad)
        self.class_head = new

    @property
    def num_task_heads(self) -> int:
        return 0 if self.mask_heads is None else len(self.mask_heads)

    def add_task_head(self) -> None:
        """A mask head for the next task, starting as a copy of the newest one."""
        if self.mask_heads is None:
            raise ValueError(f"add_task_head: this {type(self).__name__} has one shared mask head (task_heads=False)")
        self.mask_heads.append(copy.deepcopy(self.mask_heads[-1]))

    def decode(self, fused_map: torch.Tensor, skips: list[torch.Tensor], out_size: tuple[int, int],
               task_id: torch.Tensor, frames_per_clip: int) -> torch.Tensor:
        """Mask logits [N,1,H,W]; with task heads, frame n uses the head of its clip's task id."""
        if self.mask_heads is None:
            return self.decoder.logits(self.decoder.features(fused_map, skips), out_size)
        feats = self.decoder.features(fused_map, skips)
        per_frame = task_id.repeat_interleave(frames_per_clip)
        if bool((per_frame < 0).any()):
            raise ValueError(f"this network chooses its mask head by task id, but batch.task_id holds -1 "
                             f"(the protocol did not reveal it): {sorted(set(task_id.tolist()))}")
        # A task without a head yet (scores before training it: b, forward transfer) is decoded by the
        # newest head, the one its own head will start from (add_task_head copies it).
        per_frame = per_frame.clamp(max=len(self.mask_heads) - 1)
        out = None
        for k in per_frame.unique().tolist():
            rows = per_frame == k
            logits = self.decoder.logits(feats[rows], out_size, head=self.mask_heads[k])
            if out is None:
                out = logits.new_empty((feats.shape[0], *logits.shape[1:]))
            out[rows] = logits
        return out

    # ---------------------------------------------------------------- parameters
    def named_parameter_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every parameter of the network (not those methods attach) in exactly one group; all groups
        present, possibly empty."""
        names = list(self.GROUP_ORDER) or (list(dict.fromkeys(self.GROUPS.values()))
                                            + [f"{g}_lora" for g in self.LORA_GROUPS])
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in names}
        for name, p in self.named_parameters():
            top = name.split(".", 1)[0]
            if top == METHOD_MODULES:
                continue
            if top not in self.GROUPS:
                raise KeyError(f"{type(self).__name__}: parameter {name} belongs to no group (GROUPS has {sorted(self.GROUPS)})")
            group = self.GROUPS[top]
            if group in self.LORA_GROUPS and is_lora_parameter_name(name):
                group += "_lora"
            groups[group].append((name, p))
        return groups

    def set_group_trainable(self, group: str, trainable: bool) -> None:
        groups = self.named_parameter_groups()
        if group not in groups:
            raise ValueError(f"unknown parameter group {group!r}; groups: {list(groups)}")
        for _, p in groups[group]:
            p.requires_grad_(trainable)

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def total_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
