"""The one training loop. Every method trains through it, customising only the hooks of
methods/base.py. A run: decode data once -> evaluate all tasks (b) -> for each task: train with
model selection on validation data, end_task, evaluate seen tasks + the next one, checkpoint."""

from __future__ import annotations

import math
import random
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from clavs.engine.clips import ClipStore, ClipSubset, prepare_batch
from clavs.engine.context import EngineContext
from clavs.engine.evaluate import evaluate_loader


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; finished tasks' results and checkpoints are kept."""


@dataclass
class SplitStores:
    train: ClipStore
    val: ClipStore
    test: ClipStore
    class_index: dict[str, torch.Tensor]  # split -> model class index per clip (-1: none)


@dataclass
class LoopState:
    """What a checkpoint must hold, besides model and method state, to continue exactly."""

    next_task: int = 0
    R: dict[str, list[list[float]]] = field(default_factory=dict)   # metric -> T x T (NaN = not evaluated)
    b: dict[str, list[float]] = field(default_factory=dict)         # metric -> T
    profile: dict[str, Any] = field(default_factory=lambda: {"tasks": []})


def task_seed(seed: int, task: int, epoch: int = 0) -> int:
    """Every task (and epoch) draws from its own seed, so a resumed run repeats an uninterrupted one."""
    return (seed * 1_000_003 + task * 1009 + epoch) % (2**31 - 1)


def seed_all(s: int) -> None:
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def labelled_frame_ids(batch: dict[str, Any]) -> list[int] | None:
    """The frame positions that carry ground truth, when they are the same for every clip of the
    batch and not all of them; None otherwise (then every frame is decoded)."""
    valid = batch["mask_valid"]
    if bool(valid.all()) or not bool((valid == valid[:1]).all()):
        return None
    ids = valid[0].nonzero().flatten().tolist()
    return ids or None


def select_frames(batch: dict[str, Any], ids: list[int]) -> dict[str, Any]:
    """The batch restricted to frame positions `ids` (frames, masks, mask_valid; audio stays whole)."""
    out = dict(batch)
    for key in ("frames", "masks", "mask_valid"):
        out[key] = batch[key][:, ids]
    return out


def changing_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change (trainable parameters and buffers): the frozen base of a
    large encoder is not copied at every new best epoch."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


class Trainer:
    def __init__(self, method: Any, scenario: Any, stores: SplitStores, ctx: EngineContext, *,
                 progress: Any = None, on_task_end: Callable[[int | None, LoopState], None] | None = None):
        """on_task_end(t, state) after each task (t=None: after the initial evaluation `b`)."""
        self.method = method
        self.scenario = scenario
        self.stores = stores
        self.ctx = ctx
        self.cfg = ctx.config
        self.fabric = ctx.fabric
        self.progress = progress
        self.on_task_end = on_task_end
        self.T = len(scenario.tasks)

    # -- data ------------------------------------------------------------------------------
    def loader(self, split: str, task_index: int, *, train: bool, epoch: int = 0) -> DataLoader:
        task = self.scenario.tasks[task_index]
        store = getattr(self.stores, split)
        subset = ClipSubset(store, getattr(task, split), self.stores.class_index[split], task_index)
        tc = self.cfg["train"]
        seed = task_seed(self.cfg["seed"], task_index, epoch)
        batch_size = tc["batch_size"] if train else tc["eval_batch_size"]
        if train and self.fabric.world_size > 1:
            # Training is sharded across processes, shuffled from the run's seed for every epoch.
            sampler = DistributedSampler(subset, num_replicas=self.fabric.world_size, rank=self.fabric.global_rank,
                                         shuffle=True, seed=seed)
            dl = DataLoader(subset, batch_size=batch_size, sampler=sampler, num_workers=tc["num_workers"])
            return self.fabric.setup_dataloaders(dl, use_distributed_sampler=False)
        # Evaluation is not sharded: every rank scores the whole set, so the numbers rank 0 writes do
        # not depend on the number of devices.
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(subset, batch_size=batch_size, shuffle=train, generator=gen if train else None,
                          num_workers=tc["num_workers"], drop_last=False)

    # -- evaluation ------------------------------------------------------------------------
    def score_task(self, split: str, j: int) -> dict[str, float]:
        """Every metric of `method.predict` on task j's clips of `split` (task id given only in TIL)."""
        tid = j if self.scenario.tasks[j].task_id_visible else None
        with self.fabric.autocast():
            return evaluate_loader(self.method, self.loader(split, j, train=False), task_id=tid,
                                   has_classes=self.scenario.has_class_head, fabric=self.fabric)

    def evaluate_row(self, after_task: int | None) -> tuple[dict[str, list[float]], int]:
        """Test scores after training `after_task` (None: before any training) on the tasks the
        scenario's schedule names (seen tasks and the next one), NaN elsewhere: (metric -> list of T
        values, frames scored)."""
        row: dict[str, list[float]] = {}
        frames = 0
        for j in self.scenario.tasks_to_evaluate(after_task):
            scores = self.score_task("test", j)
            frames += scores.pop("_frames")
            for name, value in scores.items():
                row.setdefault(name, [math.nan] * self.T)[j] = float(value)
        return row, frames

    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process (all ranks must stop together under DDP)."""
        flag = torch.isfinite(loss.detach()).to(torch.float32)
        if self.fabric.world_size > 1:
            flag = self.fabric.all_reduce(flag, reduce_op="min")
        return bool(flag > 0)

    # -- training --------------------------------------------------------------------------
    def train_task(self, t: int) -> dict[str, Any]:
        task = self.scenario.tasks[t]
        tc = self.cfg["train"]
        seed_all(task_seed(self.cfg["seed"], t))
        self.method.begin_task(task)
        params = self.method.trainable_parameters()
        model = self.method.model
        stats = {"task": t, "train_frames": 0, "train_seconds": 0.0, "steps": 0, "best_epoch": None,
                 "trainable_parameters": sum(p.numel() for p in params),
                 "total_parameters": sum(p.numel() for p in model.parameters())}
        if not params or len(task.train) == 0:
            # A method that trains nothing in this task (e.g. a prototype method after task 0) still
            # gathers its statistics.
            self.method.end_task(task, self.loader("train", t, train=False))
            return stats
        optimizer = torch.optim.AdamW(params, lr=tc["lr"], weight_decay=tc["weight_decay"])
        # Fabric wraps the model for the device, the precision (autocast) and DDP; a fresh wrapper per
        # task, because the set of trainable parameters may change between tasks.
        wrapped, optimizer = self.fabric.setup(model, optimizer, _reapply_compile=False)
        best_score, best_state, best_method_state = -math.inf, None, None
        bar = self.progress.add_task(f"task {t + 1}/{self.T} train", total=tc["epochs"] * math.ceil(len(task.train) / tc["batch_size"])) if self.progress else None
        for epoch in range(tc["epochs"]):
            model.train()
            start = time.perf_counter()
            for step, batch in enumerate(self.loader("train", t, train=True, epoch=epoch)):
                batch = prepare_batch(self.fabric.to_device(batch))
                ids = labelled_frame_ids(batch) if getattr(model, "supports_frame_ids", False) else None
                if ids is not None:  # decode only the frames with ground truth (S4 train: frame 1)
                    out = wrapped(batch["frames"], batch["audio"], frame_ids=ids)
                    batch = select_frames(batch, ids)
                else:
                    out = wrapped(batch["frames"], batch["audio"])
                terms = self.method.loss(batch, out)
                total = sum(terms.values())
                if not self._all_finite(total):
                    detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
                    done = f"tasks 0..{t - 1} are finished and checkpointed" if t else "no task was finished"
                    raise TrainingDiverged(
                        f"loss is not finite at task {t} (of {self.T}), epoch {epoch}, step {step}: {detail}; "
                        f"{done}. Rerunning the same config resumes and diverges again: start a new run "
                        f"(e.g. with a lower train.lr) or check the data.")
                optimizer.zero_grad(set_to_none=True)
                self.fabric.backward(total)
                if tc["grad_clip"]:  # Fabric unscales (16-mixed) before clipping
                    self.fabric.clip_gradients(wrapped, optimizer, max_norm=tc["grad_clip"])
                self.method.after_backward()  # sees the gradients the step will use
                optimizer.step()
                self.method.after_step()
                stats["steps"] += 1
                stats["train_frames"] += int(batch["mask_valid"].numel())
                if bar is not None:
                    self.progress.update(bar, advance=1, description=f"task {t + 1}/{self.T} epoch {epoch + 1} loss {float(total):.3f}")
            stats["train_seconds"] += time.perf_counter() - start
            if tc["select_metric"] != "last" and len(task.val) > 0:
                value = self.score_task("val", t).get(tc["select_metric"], -math.inf)
                if value > best_score:  # model selection on validation data only
                    best_score, best_state, stats["best_epoch"] = value, changing_state(model), epoch
                    best_method_state = self.method.selection_state()
        if best_state is not None:
            model.load_state_dict(best_state, strict=False)
            self.method.restore_selection_state(best_method_state)
        if bar is not None:
            self.progress.remove_task(bar)
        self.method.end_task(task, self.loader("train", t, train=False))
        return stats

    def run(self, state: LoopState) -> LoopState:
        """Continue from `state` (fresh: next_task == 0 and empty R) to the end of the scenario."""
        device = self.fabric.device
        if state.next_task == 0 and not state.b:
            start = time.perf_counter()
            state.b, _ = self.evaluate_row(None)
            state.profile["initial_eval_seconds"] = time.perf_counter() - start
            if self.on_task_end:
                self.on_task_end(None, state)
        for t in range(state.next_task, self.T):
            start = time.perf_counter()
            stats = self.train_task(t)
            eval_start = time.perf_counter()
            row, eval_frames = self.evaluate_row(t)
            eval_seconds = time.perf_counter() - eval_start
            for name, values in row.items():
                state.R.setdefault(name, [[math.nan] * self.T for _ in range(self.T)])[t] = values
            stats.update({
                "eval_seconds": eval_seconds,
                "eval_frames": eval_frames,
                "eval_frames_per_s": eval_frames / eval_seconds if eval_seconds else None,
                "train_frames_per_s": stats["train_frames"] / stats["train_seconds"] if stats["train_seconds"] else None,
                "wall_seconds": time.perf_counter() - start,
                "peak_memory_mb": peak_memory_mb(device),
            })
            state.profile["tasks"].append(stats)
            state.next_task = t + 1
            if self.on_task_end:
                self.on_task_end(t, state)
        return state
