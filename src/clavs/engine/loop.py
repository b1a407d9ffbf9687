"""The one training loop. Every method trains through it, customising only the hooks of
methods/base.py (the hook order is written there). A run: decode data once -> score every task
before training (b) -> train through the scenario -> after each task score the seen tasks and the
next one on the test clips (and on the validation clips: after the last task only, unless
train.val_matrix=full) -> checkpoint.

Two schedules share the step:
- visible boundaries (TIL, CIL, DIL; TF-CL with protocol.boundaries=visible): per task, a fresh
  optimiser, `epochs` passes, model selection on the task's validation clips, end_task;
- a task-free stream (TF-CL by default): the method is told of no boundary (one exception: a method
  whose algorithm is defined by its first task may ask to be told where the first one ends,
  `told_first_task_end()`); one optimiser runs over the stream (each hidden task's clips `epochs`
  times as they arrive), the method consolidates on its own schedule, and the seen test clips are
  scored every `protocol.anytime_every` steps (the anytime-accuracy curve). The accuracy matrix is
  still filled at the hidden task ends: evaluation is the benchmark's business, not the method's.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from clavs.batch import Batch
from clavs.engine.clips import ClipStore, ClipSubset
from clavs.engine.distributed import all_gather_rows, fresh_clips_in_step, gather_stats, shard_positions, training_share
from clavs.engine.evaluate import evaluate_batches
from clavs.methods.context import MethodContext, TaskData
from clavs.utils.seeding import seed_all, task_seed


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
    R: dict[str, list[list[float]]] = field(default_factory=dict)       # test: metric -> T x T (NaN = not evaluated)
    b: dict[str, list[float]] = field(default_factory=dict)             # test: metric -> T
    R_val: dict[str, list[list[float]]] = field(default_factory=dict)   # the same on the validation clips
    b_val: dict[str, list[float]] = field(default_factory=dict)         # (train.val_matrix=last: last row only)
    profile: dict[str, Any] = field(default_factory=lambda: {"tasks": []})
    # task-free streams: global step, clips since the last consolidation, anytime curve, optimiser
    step: int = 0
    window: list[int] = field(default_factory=list)
    anytime: list[dict[str, Any]] = field(default_factory=list)
    optimizer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def labelled_frame_ids(batch: Batch) -> list[int] | None:
    """The frame positions that carry ground truth, when they are the same for every clip of the
    batch and not all of them; None otherwise (then every frame is decoded)."""
    valid = batch.mask_valid
    if bool(valid.all()) or not bool((valid == valid[:1]).all()):
        return None
    ids = valid[0].nonzero().flatten().tolist()
    return ids or None


def changing_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change (trainable parameters and buffers): the frozen base of a
    large encoder is not copied at every new best epoch."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k in trainable or k in buffers}


class Trainer:
    def __init__(self, method: Any, scenario: Any, stores: SplitStores, ctx: MethodContext, *,
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
        self.task_free = ctx.task_free
        # The validation matrix's last row gives the AA that hyperparameters are chosen on; the
        # other rows (validation forgetting, transfer) cost as much as the test matrix again.
        self._full_val_matrix = self.cfg["train"].get("val_matrix", "full") == "full"

    # -- data ------------------------------------------------------------------------------
    def _batches(self, loader: Iterable[Any]) -> Iterator[Batch]:
        """Prepared batches on the device; only the labelled frames are decoded where every clip of
        the batch labels the same ones (S4 training: frame 1)."""
        for batch in loader:
            batch = self.fabric.to_device(batch).prepared()
            yield batch.with_frame_ids(labelled_frame_ids(batch))

    def loader(self, split: str, indices: Sequence[int], *, task_id: int, train: bool, seed: int = 0) -> Iterator[Batch]:
        """Batches of the clips `indices` of `split`; task_id is what the batch reveals (-1: nothing).
        train: this process's share of the clips, in the epoch order drawn from `seed`
        (engine/distributed.py: with W processes of batch B, step k is a single process's step k of
        batch B*W); otherwise all of `indices`, in order."""
        store = getattr(self.stores, split)
        subset = ClipSubset(store, indices, self.stores.class_index[split], task_id)
        tc = self.cfg["train"]
        batch_size = tc["batch_size"] if train else tc["eval_batch_size"]
        order = training_share(len(subset), seed, self.fabric.global_rank, self.fabric.world_size) if train else None
        # The generator only gives the DataLoader its workers' base seed; evaluation loaders draw it
        # from the global RNG, as they always have (so that runs keep their numbers).
        gen = torch.Generator().manual_seed(seed) if train else None
        return self._batches(DataLoader(subset, batch_size=batch_size, sampler=order, generator=gen,
                                        num_workers=tc["num_workers"], drop_last=False, collate_fn=Batch.collate))

    def steps_per_epoch(self, clips: int) -> int:
        """Training steps of one epoch over `clips` clips (every process takes as many)."""
        return math.ceil(math.ceil(clips / self.fabric.world_size) / self.cfg["train"]["batch_size"])

    def task_data(self, split: str, indices: Sequence[int], task_id: int) -> TaskData:
        """Clips handed to a method (end_task, consolidate, ctx.data): all of them, or this process's share."""
        def batches(share: bool) -> Iterator[Batch]:
            mine = self._shard(indices) if share else indices
            return self.loader(split, mine, task_id=task_id, train=False)
        return TaskData(batches)

    def _shard_positions(self, n: int) -> list[int]:
        """Positions of this process's share of n clips to score or pass over: whole evaluation batches,
        dealt round-robin (engine/distributed.py), so that every batch is one a single process forms too."""
        return shard_positions(n, self.fabric.global_rank, self.fabric.world_size, self.cfg["train"]["eval_batch_size"])

    def _shard(self, indices: Sequence[int]) -> list[int]:
        return [indices[p] for p in self._shard_positions(len(indices))]

    def _gather(self, local: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return all_gather_rows(self.fabric, local)

    def train_task_id(self, t: int) -> int:
        return -1 if self.task_free else t

    def test_task_id(self, j: int) -> int:
        return j if self.scenario.tasks[j].task_id_visible else -1

    # -- evaluation ------------------------------------------------------------------------
    def score(self, split: str, indices: Sequence[int], task_id: int) -> dict[str, Any]:
        """Every metric on the clips `indices`: each process scores its share (_shard), and the states
        of all are merged (engine/evaluate.py), so every process returns the whole set's scores."""
        positions = self._shard_positions(len(indices))
        mine = [indices[p] for p in positions]
        with self.fabric.autocast():
            return evaluate_batches(self.method, self.loader(split, mine, task_id=task_id, train=False),
                                    has_classes=self.scenario.has_class_head, positions=positions,
                                    gather=self._gather if self.fabric.world_size > 1 else None)

    def score_task(self, split: str, j: int) -> dict[str, Any]:
        """Every metric of `method.predict` on task j's clips of `split` (task id given only in TIL)."""
        return self.score(split, getattr(self.scenario.tasks[j], split), self.test_task_id(j))

    def evaluate_row(self, split: str, after_task: int | None) -> tuple[dict[str, list[float]], list[int]]:
        """Scores on `split` after training `after_task` (None: before any training) on the tasks the
        scenario's schedule names (seen tasks and the next one), NaN elsewhere: (metric -> list of T
        values, frames scored by each process)."""
        row: dict[str, list[float]] = {}
        frames = [0] * self.fabric.world_size
        for j in self.scenario.tasks_to_evaluate(after_task):
            if not getattr(self.scenario.tasks[j], split):
                continue
            scores = self.score_task(split, j)
            del scores["_frames"]
            frames = [a + b for a, b in zip(frames, scores.pop("_frames_by_rank"))]
            for name, value in scores.items():
                row.setdefault(name, [math.nan] * self.T)[j] = float(value)
        return row, frames

    def anytime_point(self, state: LoopState, t: int) -> None:
        """Score the pooled test clips of every task seen so far (hidden tasks 0..t)."""
        seen = [i for j in range(t + 1) for i in self.scenario.tasks[j].test]
        start = time.perf_counter()
        scores = self.score("test", seen, -1)
        frames = scores.pop("_frames")
        del scores["_frames_by_rank"]
        state.anytime.append({"step": state.step, "clips_seen": state.profile.get("clips_seen", 0), "task": t,
                              "frames": frames, "seconds": time.perf_counter() - start, "scores": scores})
        self.method.model.train()

    # -- the step --------------------------------------------------------------------------
    def _all_finite(self, loss: torch.Tensor) -> bool:
        """Whether the loss is finite on every process (all ranks must stop together under DDP)."""
        flag = torch.isfinite(loss.detach()).to(torch.float32)
        if self.fabric.world_size > 1:
            flag = self.fabric.all_reduce(flag, reduce_op="min")
        return bool(flag > 0)

    def step(self, wrapped: Any, optimizer: Any, batch: Batch, where: str) -> float:
        tc = self.cfg["train"]
        batch = self.method.augment_batch(batch)
        with self.fabric.autocast():  # the student's forward (wrapped) and any teacher's alike
            terms = self.method.training_step(batch, wrapped)
        if not terms:  # nothing to learn from this batch (a method that has stopped learning): no backward, no step
            return 0.0
        total = sum(terms.values())
        if not self._all_finite(total):
            detail = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
            raise TrainingDiverged(f"loss is not finite at {where}: {detail}")
        optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(total)
        # 16-mixed scales the loss: unscale first, so that after_backward sees the true gradients
        # (a no-op in other precisions; the optimiser step then does not unscale again).
        inner = getattr(optimizer, "optimizer", optimizer)  # the torch optimiser inside Fabric's wrapper
        self.fabric.strategy.precision.unscale_gradients(inner)
        self.method.after_backward()  # the summed terms' gradients, before clipping
        if tc["grad_clip"]:
            params = self.fabric.strategy.precision.main_params(inner)
            torch.nn.utils.clip_grad_norm_(params, max_norm=tc["grad_clip"], error_if_nonfinite=True)
        optimizer.step()
        self.method.after_step()
        return float(total.detach())

    def _optimizer(self) -> tuple[Any, Any]:
        tc = self.cfg["train"]
        groups = [g for g in self.method.param_groups(tc["lr"], tc["weight_decay"]) if g["params"]]
        if not groups:
            return None, None
        optimizer = torch.optim.AdamW(groups, lr=tc["lr"], weight_decay=tc["weight_decay"])
        # Fabric wraps the model for the device, the precision (autocast) and DDP; a fresh wrapper per
        # optimiser, because the set of trainable parameters may change between tasks.
        return self.fabric.setup(self.method.model, optimizer, _reapply_compile=False)

    def _diverged(self, e: TrainingDiverged, t: int) -> TrainingDiverged:
        done = f"tasks 0..{t - 1} are finished and checkpointed" if t else "no task was finished"
        return TrainingDiverged(f"{e}; {done}. Rerunning the same config resumes and diverges again: start a new "
                                f"run (e.g. with a lower train.lr) or check the data.")

    def _stats(self, t: int) -> dict[str, Any]:
        model = self.method.model
        return {"task": t, "train_frames": 0, "train_seconds": 0.0, "select_seconds": 0.0, "steps": 0, "best_epoch": None,
                "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                "total_parameters": sum(p.numel() for p in model.parameters())}

    def _bar(self, description: str, total: int) -> Any:
        return self.progress.add_task(description, total=total) if self.progress else None

    # -- visible boundaries ----------------------------------------------------------------
    def train_task(self, t: int) -> dict[str, Any]:
        task = self.scenario.tasks[t]
        tc = self.cfg["train"]
        seed_all(task_seed(self.cfg["seed"], t))
        model = self.method.model
        self.method.begin_task(task)
        self.ctx.data_source = lambda split: self.task_data(split, getattr(task, split), t)
        wrapped, optimizer = self._optimizer()
        stats = self._stats(t)
        if wrapped is not None and len(task.train) > 0:
            best_score, best_state, best_method_state = -math.inf, None, None
            bar = self._bar(f"task {t + 1}/{self.T} train", tc["epochs"] * self.steps_per_epoch(len(task.train)))
            for epoch in range(tc["epochs"]):
                model.train()
                start = time.perf_counter()
                batches = self.loader("train", task.train, task_id=t, train=True, seed=task_seed(self.cfg["seed"], t, epoch))
                for i, batch in enumerate(batches):
                    try:
                        loss = self.step(wrapped, optimizer, batch, f"task {t} (of {self.T}), epoch {epoch}, step {i}")
                    except TrainingDiverged as e:
                        raise self._diverged(e, t) from None
                    stats["steps"] += 1
                    stats["train_frames"] += batch.size * len(batch.decoded_frames)
                    if bar is not None:
                        self.progress.update(bar, advance=1, description=f"task {t + 1}/{self.T} epoch {epoch + 1} loss {loss:.3f}")
                stats["train_seconds"] += time.perf_counter() - start
                if tc["select_metric"] != "last" and len(task.val) > 0:
                    start = time.perf_counter()
                    value = self.score_task("val", t).get(tc["select_metric"], -math.inf)
                    stats["select_seconds"] += time.perf_counter() - start
                    if value > best_score:  # model selection on validation data only
                        best_score, best_state, stats["best_epoch"] = value, changing_state(model), epoch
                        best_method_state = self.method.selection_state()
            if best_state is not None:
                model.load_state_dict(best_state, strict=False)
                self.method.restore_selection_state(best_method_state)
            if bar is not None:
                self.progress.remove_task(bar)
        model.eval()  # end_task sees the model as evaluation does
        start = time.perf_counter()
        self.method.end_task(task, self.ctx.data("train"))
        stats["end_task_seconds"] = time.perf_counter() - start
        self.ctx.data_source = None
        return stats

    # -- a task-free stream ----------------------------------------------------------------
    def _stream_data(self, split: str, window: Sequence[int]) -> TaskData:
        """ctx.data in a stream: the training clips seen since the last consolidation. A stream reveals
        no validation clips (they would be indexed by training positions), so 'val' is an error."""
        if split != "train":
            raise ValueError(f"ctx.data({split!r}): a task-free stream gives a method only the training clips "
                             f"it has seen since the last consolidation; hold some of them out instead")
        return self.task_data("train", sorted(set(window)), -1)

    def run_stream(self, state: LoopState) -> LoopState:
        """Hidden boundaries: one optimiser over the whole stream, consolidation on the method's schedule."""
        tc, pc = self.cfg["train"], self.cfg["protocol"]
        model = self.method.model
        if state.step == 0:  # the stream's start (a resumed stream has begun already)
            self.method.begin_task(None)
        wrapped, optimizer = self._optimizer()
        if wrapped is None:
            raise ValueError(f"method '{self.method.name}' trains no parameter in a task-free stream")
        if state.optimizer is not None:
            optimizer.load_state_dict(state.optimizer)
        interval = self.method.consolidation_interval()
        every = pc.get("anytime_every") or 0
        window = list(state.window)
        self.ctx.data_source = lambda split: self._stream_data(split, window)
        for t in range(state.next_task, self.T):
            task = self.scenario.tasks[t]
            seed_all(task_seed(self.cfg["seed"], t))
            stats = self._stats(t)
            start_task = time.perf_counter()
            bar = self._bar(f"stream {t + 1}/{self.T}", tc["epochs"] * self.steps_per_epoch(len(task.train)))
            for epoch in range(tc["epochs"] if task.train else 0):
                model.train()
                start = time.perf_counter()
                batches = self.loader("train", task.train, task_id=-1, train=True, seed=task_seed(self.cfg["seed"], t, epoch))
                for i, batch in enumerate(batches):
                    try:
                        loss = self.step(wrapped, optimizer, batch, f"stream step {state.step + 1} (hidden task {t} of {self.T}, pass {epoch})")
                    except TrainingDiverged as e:
                        raise self._diverged(e, t) from None
                    state.step += 1
                    stats["steps"] += 1
                    stats["train_frames"] += batch.size * len(batch.decoded_frames)
                    window.extend(batch.index.tolist())
                    if epoch == 0:  # every process's clips of this step, the padding excluded
                        fresh = fresh_clips_in_step(i, tc["batch_size"], self.fabric.world_size, len(task.train))
                        state.profile["clips_seen"] = state.profile.get("clips_seen", 0) + fresh
                    if interval and state.step % interval == 0:
                        self._consolidate(model, window)
                    if every and state.step % every == 0:
                        self.anytime_point(state, t)
                    if bar is not None:
                        self.progress.update(bar, advance=1, description=f"stream {t + 1}/{self.T} loss {loss:.3f}")
                stats["train_seconds"] += time.perf_counter() - start
            if bar is not None:
                self.progress.remove_task(bar)
            if t == 0 and self.method.told_first_task_end():  # the one boundary a method may be told
                self._consolidate(model, window)
            window[:] = self._all_windows(window)
            state.window = list(window)
            state.optimizer = optimizer.state_dict()
            self._after_task(state, t, stats, start_task)
        self.ctx.data_source = None
        return state

    def _consolidate(self, model, window: list[int]) -> None:
        """The method's consolidation in a stream, on every process's clips since the previous one."""
        window[:] = self._all_windows(window)
        model.eval()
        self.method.consolidate(self.ctx.data("train"))
        window.clear()
        model.train()

    def _all_windows(self, window: list[int]) -> list[int]:
        """The clips every process trained on since the last consolidation (each knows its own)."""
        if self.fabric.world_size == 1:
            return window
        gathered = self._gather({"window": torch.tensor(window, dtype=torch.int64)})
        return sorted(set(torch.cat([g["window"] for g in gathered]).tolist()))

    # -- the run ---------------------------------------------------------------------------
    def _after_task(self, state: LoopState, t: int, stats: dict[str, Any], start: float) -> None:
        eval_start = time.perf_counter()
        row, eval_frames = self.evaluate_row("test", t)
        eval_seconds = time.perf_counter() - eval_start
        val_start = time.perf_counter()
        val_row = self.evaluate_row("val", t)[0] if self._full_val_matrix or t == self.T - 1 else {}
        stats["val_eval_seconds"] = time.perf_counter() - val_start
        for name, values in row.items():
            state.R.setdefault(name, [[math.nan] * self.T for _ in range(self.T)])[t] = values
        for name, values in val_row.items():
            state.R_val.setdefault(name, [[math.nan] * self.T for _ in range(self.T)])[t] = values
        stats.update({"eval_seconds": eval_seconds, "wall_seconds": time.perf_counter() - start})
        self._totals_across_ranks(stats, eval_frames)
        state.profile["tasks"].append(stats)
        state.next_task = t + 1
        if self.on_task_end:
            start = time.perf_counter()
            self.on_task_end(t, state)
            stats["write_seconds"] = time.perf_counter() - start  # checkpoint and result files (in the next write)

    def _totals_across_ranks(self, stats: dict[str, Any], eval_frames_by_rank: list[int]) -> None:
        """profile.json's numbers for the whole job: frames summed over the processes (and each one's),
        seconds of this process (rank 0 writes) and of the slowest one, rates = all frames / slowest."""
        own = {"train_frames": stats["train_frames"], "train_seconds": stats["train_seconds"],
               "wall_seconds": stats["wall_seconds"], "peak_memory_mb": peak_memory_mb(self.fabric.device)}
        ranks = gather_stats(self.fabric, own)
        train_frames, eval_frames = int(sum(ranks["train_frames"])), int(sum(eval_frames_by_rank))
        train_seconds = max(ranks["train_seconds"])
        stats.update({
            "train_frames": train_frames,
            "train_frames_by_rank": [int(f) for f in ranks["train_frames"]],
            "train_seconds_max": train_seconds,
            "eval_frames": eval_frames,
            "eval_frames_by_rank": list(eval_frames_by_rank),
            "eval_frames_per_s": eval_frames / stats["eval_seconds"] if stats["eval_seconds"] else None,
            "train_frames_per_s": train_frames / train_seconds if train_seconds else None,
            "wall_seconds_max": max(ranks["wall_seconds"]),
            "peak_memory_mb": max(ranks["peak_memory_mb"]),
        })

    def run(self, state: LoopState) -> LoopState:
        """Continue from `state` (fresh: next_task == 0 and empty R) to the end of the scenario."""
        if state.next_task == 0 and not state.b:
            start = time.perf_counter()
            state.b, _ = self.evaluate_row("test", None)
            if self._full_val_matrix:
                state.b_val, _ = self.evaluate_row("val", None)
            state.profile["initial_eval_seconds"] = time.perf_counter() - start
            if self.on_task_end:
                self.on_task_end(None, state)
        if self.task_free:
            return self.run_stream(state)
        for t in range(state.next_task, self.T):
            start = time.perf_counter()
            stats = self.train_task(t)
            self._after_task(state, t, stats, start)
        return state
