"""What RanPAC and FeCAM share: learn in a first session, then freeze the network and predict with
closed-form heads (parts/closed_form.py) fitted on its frozen features.

Schedule. The first session is task 0, also in a task-free stream: the original algorithms are defined
by their first task, so these methods ask the engine where the stream's first task ends
(told_first_task_end; no later boundary reaches them) and freeze there, before that task is first
scored, which is what makes their forgetting exactly 0 in every protocol. `consolidate_every=N` > 0
instead ends it after the first N training steps of the stream, told nothing (for comparison: a
session that outlasts the first task is scored while it still trains, and forgets). It ends with the
first fit. Afterwards no weight changes:
trained_groups() is empty (visible boundaries: the engine builds no optimiser), and in a stream, whose
one optimiser is kept, training_step returns {} (the engine then skips backward and the step).

Heads.
- Mask: per-pixel features of the frozen decoder (its last level: the input of the output convolution,
  what the trained mask head saw), at the masks' resolution, on the labelled frames, with the
  ground-truth pixels as labels (background 0 / foreground 1). TIL (the task id reaches the masks):
  one head per task, fitted on that task's statistics only, never refitted. Otherwise one shared head,
  fitted on the first session's statistics and then frozen: refitting it with later tasks' statistics
  would change the masks of the old tasks.
- Class (TIL, CIL): the pooled fused features of every decoded frame, labelled with the clip's class.
  The subclass keys the heads (`class_head_key`): one per task, or one shared head refitted each task.
Each head replaces the network's output once fitted; before the first fit (the initial scores b, model
selection in task 0) predictions are the network's own.

Distributed. The end_task data is not sharded by the engine: each process takes every world_size-th
batch of a pass, the sums are all-reduced (MethodContext.all_reduce_sum), and every process then solves
the same small systems, so the heads are identical on every rank without a broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Iterable

import torch
import torch.nn.functional as F

from clavs.batch import Batch, ModelOutput, labelled_frames
from clavs.methods.base import Method, restrict_to_tasks

HELD_OUT_EVERY = 5  # no validation clips (a task-free stream): clips 0, 5, 10, ... are held out, the original's 80/20


def pixel_features(model: torch.nn.Module, batch: Batch) -> tuple[ModelOutput, torch.Tensor]:
    """The network's output and its decoder's last-level features [B*t, C, H, W] at the masks' size
    (read with a forward hook on the decoder's last block: one forward serves both)."""
    blocks = getattr(getattr(model, "decoder", None), "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no progressive decoder (decoder.blocks): its per-pixel "
                         f"features cannot be read")
    captured: list[torch.Tensor] = []
    handle = blocks[-1].register_forward_hook(lambda module, args, output: captured.append(output))
    try:
        out = model(batch)
    finally:
        handle.remove()
    feats = captured[-1]
    size = out.mask_logits.shape[-2:]
    if feats.shape[-2:] != size:  # a 1x1 output conv commutes with the resize the network applies to logits
        feats = F.interpolate(feats, size=size, mode="bilinear", align_corners=False)
    return out, feats


def feature_dims(model: torch.nn.Module) -> tuple[int, int]:
    """(per-pixel decoder feature width, pooled fused feature width) of the plain network."""
    try:
        return int(model.decoder.widths[-1]), int(model.config.dim)
    except AttributeError:
        raise ValueError(f"{type(model).__name__} is not the plain AVS network (decoder.widths, config.dim)") from None


@dataclass
class _Fit:
    """A head being fitted: its kind ('mask' or 'class'), key, fresh statistics, and for class heads the
    model class index of each output."""

    kind: str
    key: Any
    head: Any
    classes: list[int] | None = None


class FirstSessionMethod(Method):
    """Base of the prototype methods (see the module docstring). Subclasses define the heads."""

    needs_held_out: ClassVar[bool] = False  # heads choose a hyperparameter on held-out statistics

    def __init__(self, model, hparams, scenario, ctx):
        super().__init__(model, hparams, scenario, ctx)
        self.pixel_dim, self.pooled_dim = feature_dims(model)
        self.seed = int(ctx.config.get("seed", 0))
        self.frozen = False
        self.mask_heads: dict[int, Any] = {}
        self.class_heads: dict[str, Any] = {}
        self.head_classes: dict[str, list[int]] = {}

    # -- what a subclass defines ---------------------------------------------------------------
    def new_head(self, kind: str, outputs: int) -> Any:
        """Empty statistics of a head: kind 'mask' (labels 0/1) or 'class' (`outputs` classes)."""
        raise NotImplementedError

    def head_from_state(self, kind: str, state: dict[str, Any]) -> Any:
        raise NotImplementedError

    def mask_logit(self, head: Any, x: torch.Tensor) -> torch.Tensor:
        """[N, C] pixel features -> [N] mask logits."""
        raise NotImplementedError

    def class_head_key(self, task_id: int) -> str:
        return f"task{task_id}"

    def class_head_classes(self, task) -> list[int]:
        return list(task.class_indices)

    def keeps_statistics(self, kind: str, key: Any) -> bool:
        """Whether a head is refitted later (then its sums stay in the state; otherwise only the fit)."""
        return False

    def pixels_per_frame(self) -> int:
        """Pixels sampled per labelled frame for the mask statistics (0: all)."""
        return 0

    # -- the schedule --------------------------------------------------------------------------
    def trained_groups(self) -> tuple[str, ...]:
        # A stream keeps its one optimiser (training_step stops it); with boundaries only task 0 trains.
        if self.ctx.task_free or (self.task is not None and self.task.id == 0):
            return self.trains
        return ()

    def training_step(self, batch, model):
        if self.frozen:
            return {}  # the first session is over: nothing to learn (the engine skips backward and step)
        return super().training_step(batch, model)

    def end_task(self, task, data):
        self.fit(data, task)

    def told_first_task_end(self):
        return not self.hp.consolidate_every

    def consolidate(self, data):
        """Task-free stream: the first consolidation ends the first session; later ones have nothing to do."""
        if not self.frozen:
            self.fit(data, None)

    # -- fitting -------------------------------------------------------------------------------
    def _fits_for(self, task) -> list[_Fit]:
        til = self.scenario.protocol == "til"
        fits = []
        if til and task is not None:
            fits.append(_Fit("mask", task.id, self.new_head("mask", 2)))
        elif not self.mask_heads:
            fits.append(_Fit("mask", 0, self.new_head("mask", 2)))
        if task is not None and self.scenario.has_class_head and task.class_indices:
            classes = self.class_head_classes(task)
            fits.append(_Fit("class", self.class_head_key(task.id), self.new_head("class", len(classes)), classes))
        return fits

    def fit(self, data: Iterable[Batch], task) -> None:
        """Statistics of `data` (and held-out statistics where the heads need them), then the fits."""
        fits = self._fits_for(task)
        self.frozen = True
        if not fits:  # e.g. DIL after the first session: the shared mask head is final, no class head
            return
        held = [_Fit(f.kind, f.key, self.new_head(f.kind, f.head.outputs), f.classes) for f in fits] \
            if self.needs_held_out else None
        # Held-out data: the task's validation clips; a stream reveals none (1 clip in HELD_OUT_EVERY instead).
        split = held is not None and (task is None or not task.val)
        self.accumulate(data, fits, held if split else None)
        if held is not None and not split:
            self.accumulate(self.ctx.data("val"), held)
        for i, f in enumerate(fits):
            store = self.mask_heads if f.kind == "mask" else self.class_heads
            if f.key in store:
                store[f.key].merge(f.head)
            else:
                store[f.key] = f.head
            head = store[f.key]
            if held is not None:
                head.fit(held[i].head, merge_held_out=split)
            else:
                head.fit()
            if f.classes is not None:
                self.head_classes[f.key] = f.classes
            ridge = getattr(head, "ridge", None)
            self.ctx.log(f"{self.name}: fitted the {f.kind} head {f.key}" + (f" (ridge {ridge:g})" if ridge else ""))
            if not self.keeps_statistics(f.kind, f.key):
                head.release_statistics()

    def accumulate(self, data: Iterable[Batch], fits: list[_Fit], held: list[_Fit] | None = None) -> None:
        """One pass: this process's share of the batches, then the sums of every process. With `held`,
        every HELD_OUT_EVERY-th clip of the data from the first on (by position, counted on every process
        alike; so a first session of 2 clips still holds one out) goes to the held-out statistics instead."""
        rank, world = self.ctx.rank, self.ctx.world_size
        position = 0
        for i, batch in enumerate(data):
            first, position = position, position + batch.size
            if i % world != rank:
                continue
            parts = [(batch, fits)]
            if held is not None:
                hold = torch.arange(first, position, device=batch.index.device) % HELD_OUT_EVERY == 0
                parts = [(batch.select(~hold), fits), (batch.select(hold), held)]
            for part, targets in parts:
                if part.size:
                    self._update(part, targets)
        for f in fits + (held or []):
            f.head.all_reduce(self.ctx.all_reduce_sum)

    @torch.no_grad()
    def _update(self, batch: Batch, fits: list[_Fit]) -> None:
        with self.ctx.autocast():
            out, pixels = pixel_features(self.model, batch)
        for f in fits:
            x, labels = self.pixel_rows(batch, pixels) if f.kind == "mask" else self.class_rows(batch, out, f.classes)
            if labels.numel():
                f.head.update(x, labels)

    def pixel_rows(self, batch: Batch, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features [P, C] and ground truth [P] (0/1) of the labelled frames' pixels (a sample of
        pixels_per_frame() per frame, drawn from the batch's first clip index: independent of the rank)."""
        feats, masks = labelled_frames(batch, ModelOutput(mask_logits=pixels))
        k, c = feats.shape[:2]
        x = feats.flatten(2).transpose(1, 2)       # [K, HW, C]
        y = (masks.flatten(1) > 0.5).long()        # [K, HW]
        n = self.pixels_per_frame()
        if 0 < n < x.shape[1] and k:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(batch.index[0]))
            idx = torch.rand(k, x.shape[1], generator=g).argsort(1)[:, :n].to(x.device)
            x, y = x.gather(1, idx[..., None].expand(-1, -1, c)), y.gather(1, idx)
        return x.reshape(-1, c), y.reshape(-1)

    @staticmethod
    def class_rows(batch: Batch, out: ModelOutput, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Pooled features [R, d] of every decoded frame of the clips of `classes`, and the position of
        each clip's class in `classes` [R]."""
        pooled = out.features["pooled"]
        label = batch.class_index.repeat_interleave(len(batch.decoded_frames))
        lookup = torch.full((max(classes) + 1,), -1, dtype=torch.long, device=label.device)
        lookup[torch.tensor(classes, device=label.device)] = torch.arange(len(classes), device=label.device)
        local = torch.where((label >= 0) & (label <= max(classes)), lookup[label.clamp(0, max(classes))], -1)
        keep = local >= 0
        return pooled[keep], local[keep]

    # -- prediction ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, batch: Batch) -> ModelOutput:
        if not self.mask_heads:
            return super().predict(batch)
        out, pixels = pixel_features(self.model, batch)
        out.mask_logits = self._mask_logits(batch, pixels)
        if out.class_logits is not None:
            if self.class_heads:
                out.class_logits = self._class_logits(batch, out)
            elif bool((batch.task_id >= 0).any()):
                out.class_logits = restrict_to_tasks(out.class_logits, batch, self.scenario)
        return out

    def _mask_logits(self, batch: Batch, pixels: torch.Tensor) -> torch.Tensor:
        n, c, h, w = pixels.shape
        if self.scenario.protocol == "til":
            # a task without its head yet (forward transfer) is scored by the newest, as the network does
            keys = batch.task_id.repeat_interleave(len(batch.decoded_frames)).clamp(0, max(self.mask_heads))
        else:
            keys = torch.zeros(n, dtype=torch.long, device=pixels.device)
        rows = pixels.permute(0, 2, 3, 1).reshape(n, h * w, c)
        logits = torch.empty(n, h * w, dtype=torch.float32, device=pixels.device)
        for key in keys.unique().tolist():
            sel = keys == key
            logits[sel] = self.mask_logit(self.mask_heads[key], rows[sel].reshape(-1, c)).reshape(-1, h * w)
        return logits.reshape(n, 1, h, w)

    def _class_logits(self, batch: Batch, out: ModelOutput) -> torch.Tensor:
        """Each head scores its classes' columns; TIL rows only their task's head; others -inf."""
        pooled = out.features["pooled"]
        n, num_classes = out.class_logits.shape
        logits = torch.full((n, num_classes), float("-inf"), device=pooled.device)
        if self.scenario.protocol == "til":
            tids = batch.task_id.repeat_interleave(len(batch.decoded_frames))
            groups = [(self.class_head_key(t), tids == t) for t in tids.unique().tolist()]
        else:
            groups = [(key, torch.ones(n, dtype=torch.bool, device=pooled.device)) for key in self.class_heads]
        for key, rows in groups:
            if key not in self.class_heads or not bool(rows.any()):
                continue
            cols = torch.tensor(self.head_classes[key], device=pooled.device)
            block = logits[rows]
            block[:, cols] = self.class_heads[key].scores(pooled[rows]).float()
            logits[rows] = block
        return logits

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"frozen": self.frozen,
                "mask_heads": {str(k): h.state_dict() for k, h in self.mask_heads.items()},
                "class_heads": {k: h.state_dict() for k, h in self.class_heads.items()},
                "head_classes": {k: list(v) for k, v in self.head_classes.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.frozen = bool(state["frozen"])
        self.mask_heads = {int(k): self.head_from_state("mask", s) for k, s in state["mask_heads"].items()}
        self.class_heads = {k: self.head_from_state("class", s) for k, s in state["class_heads"].items()}
        self.head_classes = {k: [int(c) for c in v] for k, v in state["head_classes"].items()}
