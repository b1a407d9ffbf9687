"""Task checkpoints of a run (checkpoints/task_<t>.pt) and the scenario file that pins its tasks.

A checkpoint holds everything needed to continue after task t: the network's weights, the method's
state, the loop's state (matrices so far, profile; in a task-free stream also the step, the clips
since the last consolidation, the anytime curve and the stream's optimiser). No RNG state: every
task and epoch reseeds from (seed, task, epoch), see engine/loop.task_seed. Loading never runs code
from the file (weights_only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clavs.results.store import RunDir
from clavs.utils.io import atomic_write, atomic_write_json

CHECKPOINT_FORMAT = 2
SCENARIO_FILE = "scenario.json"


def save_checkpoint(run: RunDir, t: int, method: Any, state: Any) -> Path:
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": t,
        "model": method.model.state_dict(),
        "method": method.state_dict(),
        "loop": state.to_dict(),
    }
    path = run.checkpoint_path(t)
    atomic_write(path, lambda f: torch.save(payload, f), "wb")
    # Only the newest checkpoint is needed to continue; the previous ones are kept as the per-task
    # models a user may want to inspect (small at tiny scale).
    return path


def load_checkpoint(path: Path, method: Any, *, task_free: bool = False) -> Any:
    from clavs.engine.loop import LoopState

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot read checkpoint ({e}); delete it to restart from the previous task") from e
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise RuntimeError(f"{path}: checkpoint format {payload.get('format')} is not {CHECKPOINT_FORMAT} "
                           f"(written by another version of clavs); start a new run directory")
    if not task_free:  # grow heads to the checkpoint's size: the task it was written after
        method.begin_task(method.scenario.tasks[payload["task"]])
    method.model.load_state_dict(payload["model"])
    method.load_state_dict(payload["method"])
    return LoopState(**payload["loop"])


def check_or_write_scenario(run: RunDir, scenario: Any, *, resuming: bool) -> None:
    """Save the task split of a new run; on resume, refuse to continue if the data now split differently."""
    path = run.path / SCENARIO_FILE
    current = json.loads(json.dumps(scenario.to_dict(), default=str))
    if resuming and path.exists():
        saved = json.loads(path.read_text())
        if saved != current:
            raise ValueError(f"{path}: the tasks built from the data now differ from those this run started with "
                             f"(has the dataset at data.root changed?); start a new run directory instead")
        return
    atomic_write_json(path, current)
