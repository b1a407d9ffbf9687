"""Figure 3: qualitative overlays. For a few test clips of the first and of the last task: the frame,
its ground truth, and the prediction of each chosen method after the last task (its run's last
checkpoint, rebuilt by engine/restore.py), each mask drawn over the frame with its IoU.

Bounded work on a CPU: `clips_per_task` clips (the first ones of each task's test list) are decoded
from the dataset tree, their audio embedded with the run's frozen encoder, and one forward per clip
and method is run. Nothing is built: when the run's dataset tree is absent (SynthAVS not in this
cache, data.root moved) or a run has no checkpoint, the figure (or that method) is skipped and the
reason returned as a note for the report.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clavs.errors import ClavsError
from clavs.reports.collect import MethodGroup
from clavs.reports.figures import SavedFigure, pyplot, save_figure
from clavs.reports.overlay_video import draw_mask

DEFAULT_METHODS = 4  # the paper shows the four best methods
GT_COLOUR = (26, 217, 51)
PRED_COLOUR = (242, 38, 38)


def choose_groups(groups: list[MethodGroup], protocol: str, methods: list[str] | None = None,
                  count: int = DEFAULT_METHODS) -> list[MethodGroup]:
    """The groups of `protocol` named in `methods` (by label or method name, in that order), else the
    `count` best by mean AA of the report's metric."""
    pool = [g for g in groups if g.protocol == protocol]
    if methods:
        chosen = []
        for name in methods:
            found = [g for g in pool if g.label == name or g.row["method"] == name]
            if not found:
                have = ", ".join(sorted({g.label for g in pool})) or "none"
                raise ClavsError(f"--methods: no finished {protocol.upper()} run of '{name}' here (have: {have})")
            chosen.extend(g for g in found if g not in chosen)
        return chosen
    ranked = sorted(pool, key=lambda g: -g.mean("aa") if not math.isnan(g.mean("aa")) else math.inf)
    return ranked[:count]


def dataset_root(config: dict[str, Any]) -> Path | None:
    """The run's dataset tree if it is on this machine (SynthAVS is never built here), else None."""
    from clavs.engine.runner import synth_root

    root = Path(config["data"]["root"]).expanduser() if config["data"].get("root") else synth_root(config)
    return root if (root / "Single-source").is_dir() or (root / "Multi-sources").is_dir() else None


@dataclass
class Clips:
    """Decoded test clips: uint8 frames [N,T,3,S,S] and masks [N,T,1,S,S], mask_valid [N,T], the run's
    audio embeddings [N,T,D], their video ids and, per clip, the task it was drawn from."""

    frames: torch.Tensor
    masks: torch.Tensor
    mask_valid: torch.Tensor
    audio: torch.Tensor
    video_ids: list[str]
    tasks: list[int]


def load_clips(restored: Any, indices: list[int], tasks: list[int]) -> Clips:
    """Decode test clips `indices` of the restored run's dataset and embed their audio as the run did."""
    from clavs.data.avsbench import READERS
    from clavs.engine.clips import decode_split
    from clavs.engine.runner import PROTOCOL_SUBSET

    config = restored.config
    root = dataset_root(config)
    if root is None:
        where = config["data"].get("root") or "the SynthAVS cache (CLAVS_HOME)"
        raise FileNotFoundError(f"the run's dataset is not on this machine ({where}); run `clavs run` with its "
                                f"config once to build it")
    reader = READERS[PROTOCOL_SUBSET[config["protocol"]["name"]]]
    test = reader(root, split="test", image_size=config["data"]["image_size"], audio="wav", normalize=False)
    store = decode_split(test.subset(indices), key="", use_cache=False)
    audio = restored.embed_waveforms(store.waveforms)
    return Clips(store.frames, store.masks, store.mask_valid, audio, list(store.video_ids), list(tasks))


def test_task_of(scenario: Any, index: int) -> int:
    for task in scenario.tasks:
        if index in task.test:
            return task.id
    raise ValueError(f"test clip {index} belongs to no task of this scenario")


def predict_masks(restored: Any, clips: Clips, indices: list[int]) -> list[torch.Tensor]:
    """Per clip, the predicted binary masks [T,S,S] (sigmoid > 0.5) of the restored method."""
    out = []
    for i, index in enumerate(indices):
        task_id = restored.task_id(test_task_of(restored.scenario, index) if restored.protocol == "til" else None)
        logits = restored.predict(clips.frames[i : i + 1], clips.audio[i : i + 1], task_id=task_id).mask_logits
        out.append((logits[:, 0].float().sigmoid() > 0.5).cpu())
    return out


def iou(pred: torch.Tensor, gt: torch.Tensor) -> float:
    """Jaccard index of two binary masks; an empty ground truth scores the share of correct background
    (as AVSBench's mIoU does)."""
    pred, gt = pred.bool(), gt.bool()
    if not bool(gt.any()):
        return float((~pred).float().mean())
    return float((pred & gt).sum()) / float((pred | gt).sum())


def overlay(frame: torch.Tensor, mask: torch.Tensor, colour: tuple[int, int, int]) -> Any:
    """frame [3,S,S] uint8 with `mask` [S,S] tinted in `colour`, as an [S,S,3] uint8 array."""
    return draw_mask(frame.permute(1, 2, 0).numpy(), mask.bool().numpy(), colour)


def shown_frame(mask_valid: torch.Tensor) -> int:
    """The middle labelled frame of a clip."""
    ids = mask_valid.nonzero().flatten().tolist()
    return ids[len(ids) // 2] if ids else 0


def plot_overlays(groups: list[MethodGroup], out_dir: str | os.PathLike, *, protocol: str,
                  methods: list[str] | None = None, clips_per_task: int = 2,
                  stem: str = "fig3_qualitative") -> tuple[SavedFigure | None, list[str]]:
    """Figure 3 for the chosen methods of `protocol`; returns the figure (None if skipped) and notes."""
    from clavs.engine.restore import restore_run

    notes: list[str] = []
    chosen = choose_groups(groups, protocol, methods)
    if not chosen:
        return None, [f"Figure 3 skipped: no finished {protocol.upper()} run"]
    # One seed for every method where possible, so that every method sees the same tasks.
    common = set.intersection(*({r["seed"] for r in g.runs} for g in chosen))
    seed = min(common) if common else None
    restored: list[tuple[MethodGroup, Any]] = []
    for g in chosen:
        run = next((r for r in g.runs if r["seed"] == seed), g.runs[0])
        try:
            restored.append((g, restore_run(run["path"])))
        except (ClavsError, OSError, ValueError) as e:
            notes.append(f"Figure 3: {g.label} left out ({e})")
    if not restored:
        return None, notes + ["Figure 3 skipped: no chosen method could be restored from a checkpoint"]
    reference = restored[0][1]
    tasks = [0, len(reference.scenario.tasks) - 1] if len(reference.scenario.tasks) > 1 else [0]
    picked = [(t, i) for t in tasks for i in reference.scenario.tasks[t].test[:clips_per_task]]
    indices, clip_tasks = [i for _, i in picked], [t for t, _ in picked]
    try:
        clips = load_clips(reference, indices, clip_tasks)
    except (ClavsError, OSError, ValueError) as e:
        return None, notes + [f"Figure 3 skipped: {e}"]
    predictions: list[tuple[str, list[torch.Tensor]]] = []
    for g, r in restored:
        try:
            own = clips if r is reference else load_clips(r, indices, clip_tasks)
            if own.video_ids != clips.video_ids:
                raise ValueError("its test clips are other videos (another dataset tree or split)")
            predictions.append((g.label, predict_masks(r, own, indices)))
        except (ClavsError, OSError, ValueError) as e:
            notes.append(f"Figure 3: {g.label} left out ({e})")
    if not predictions:
        return None, notes + ["Figure 3 skipped: no chosen method could predict"]
    return _draw(clips, predictions, out_dir, stem), notes


def _draw(clips: Clips, predictions: list[tuple[str, list[torch.Tensor]]], out_dir: str | os.PathLike,
          stem: str) -> SavedFigure:
    plt = pyplot()
    rows, cols = len(clips.video_ids), 2 + len(predictions)
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.95 * rows + 0.3), squeeze=False, layout="constrained")
    for r in range(rows):
        f = shown_frame(clips.mask_valid[r])
        frame, gt = clips.frames[r, f], clips.masks[r, f, 0]
        panels = [(frame.permute(1, 2, 0).numpy(), "frame", ""), (overlay(frame, gt, GT_COLOUR), "ground truth", "")]
        for label, masks in predictions:
            pred = masks[r][f]
            panels.append((overlay(frame, pred, PRED_COLOUR), label, f"IoU {iou(pred, gt):.2f}"))
        for c, (image, title, text) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
            if text:
                ax.set_xlabel(text, fontsize=7)
        axes[r, 0].set_ylabel(f"task {clips.tasks[r]}\n{clips.video_ids[r]}, frame {f}", fontsize=7)
    return save_figure(fig, out_dir, stem)
