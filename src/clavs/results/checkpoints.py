"""Task checkpoints of a run (checkpoints/task_<t>.pt) and the scenario file that pins its tasks.

A checkpoint holds everything needed to continue after task t: the network's weights, the method's
state, the loop's state (matrices so far, profile; in a task-free stream also the step, the clips
since the last consolidation, the anytime curve and the stream's optimiser). No RNG state: every
task and epoch reseeds from (seed, task, epoch), see engine/loop.task_seed. Loading never runs code
from the file (weights_only).

A checkpoint is bound to its run: it records the run's config hash (the hash in the run folder's
name) and the config itself, and a resume refuses a checkpoint of another config, naming the file and
the differing keys (`check_run_binding`, `load_checkpoint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from clavs.errors import CheckpointError, RunDirError, short_reason
from clavs.results.store import RESUME_MAY_CHANGE, RunDir, config_differences, config_hash, folder_hash
from clavs.utils.io import atomic_write, atomic_write_json

CHECKPOINT_FORMAT = 3  # 3: + run_hash and config (the run the checkpoint belongs to); 2 is still read
READABLE_FORMATS = (2, 3)
SCENARIO_FILE = "scenario.json"


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(config, default=str))


def save_checkpoint(run: RunDir, t: int, method: Any, state: Any, *, run_config: dict[str, Any] | None = None,
                    keep: str = "all") -> Path:
    """Write checkpoints/task_<t>.pt. `run_config`: the config the run directory was made for (its
    config.yaml), recorded with its hash so that a resume can tell the checkpoint's run. keep="last"
    (train.keep_checkpoints) then deletes the earlier tasks' files: a resume reads only the newest,
    which is whole on disk before any other is removed (a kill in between leaves an extra file)."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "task": t,
        "run_hash": config_hash(run_config) if run_config is not None else None,
        "config": _plain(run_config) if run_config is not None else None,
        "model": method.model.state_dict(),
        "method": method.state_dict(),
        "loop": state.to_dict(),
    }
    path = run.checkpoint_path(t)
    atomic_write(path, lambda f: torch.save(payload, f), "wb")
    # Only the newest checkpoint is needed to continue; with keep="all" the previous ones stay as the
    # per-task models a user may inspect (`clavs predict --checkpoint task_k`).
    if keep == "last":
        for old in run.path.glob("checkpoints/task_*.pt"):
            stem = old.stem.split("_", 1)[1]
            if stem.isdigit() and int(stem) < t:
                old.unlink(missing_ok=True)
    return path


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The payload of a checkpoint file, read without running code from it (weights_only)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot read checkpoint ({short_reason(e)}); delete it to "
                              f"restart from the previous task") from None
    if not isinstance(payload, dict) or payload.get("format") not in READABLE_FORMATS:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: checkpoint format {found!r} is not {CHECKPOINT_FORMAT} "
                              f"(written by another version of clavs, or not a clavs checkpoint); start a new run directory")
    return payload


def load_checkpoint(path: Path, method: Any, *, task_free: bool = False, run_config: dict[str, Any] | None = None,
                    task: int | None = None) -> Any:
    """Load a checkpoint into `method` and return the loop state to continue from.

    run_config: the run's config (config.yaml); a checkpoint recording another config hash is refused,
    naming the file and the differing keys. task: the task its file name says (must match its content).
    """
    from clavs.engine.loop import LoopState

    payload = read_checkpoint(path)
    if task is not None and payload.get("task") != task:
        raise CheckpointError(f"{path}: holds task {payload.get('task')}, not task {task} as its name says; "
                              f"it was renamed or copied from elsewhere: delete it")
    if run_config is not None and payload.get("run_hash") is not None:
        expected = config_hash(run_config)
        if payload["run_hash"] != expected:
            diffs = config_differences(payload.get("config") or {}, run_config)
            listing = "; ".join(diffs[:6]) + (f"; and {len(diffs) - 6} more" if len(diffs) > 6 else "")
            raise CheckpointError(f"{path}: written by another run (config hash {payload['run_hash']}, this run is "
                                  f"{expected}; differs in {listing or 'keys not recorded'}); delete it or move it "
                                  f"back to its own run directory")
    if not task_free:  # grow heads to the checkpoint's size: the task it was written after
        method.begin_task(method.scenario.tasks[payload["task"]])
    method.model.load_state_dict(payload["model"])
    method.load_state_dict(payload["method"])
    return LoopState(**payload["loop"])


def _checkpoint_config(run: RunDir) -> tuple[Path, dict[str, Any]] | None:
    """The config recorded in the newest readable checkpoint of `run` (format 3), if any."""
    ckdir = run.path / "checkpoints"
    if not ckdir.is_dir():
        return None
    found = []
    for p in ckdir.glob("task_*.pt"):
        try:
            found.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    for _, p in sorted(found, reverse=True):
        try:
            payload = read_checkpoint(p)
        except CheckpointError:
            continue
        if isinstance(payload.get("config"), dict):
            return p, payload["config"]
    return None


def check_run_binding(run: RunDir, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Refuse to continue a run directory with a config other than the one it was made for.

    Checks that config.yaml still hashes to the hash in the folder's name (`seed<k>-<hash>`) and,
    when `config` is given (the config asked for), that it equals config.yaml up to the keys a resume
    may change (RESUME_MAY_CHANGE). Returns config.yaml's content. Messages name the differing keys.
    """
    saved = run.config()
    want = folder_hash(run.path)
    have = config_hash(saved)
    if want is not None and want != have:
        recorded = _checkpoint_config(run)
        if recorded is not None:
            diffs = config_differences(recorded[1], saved)
            where = f"changed since {recorded[0].name} was written: {'; '.join(diffs[:6]) or 'keys not recorded'}"
        else:
            where = "no checkpoint records the original values"
        raise RunDirError(f"{run.path / 'config.yaml'} was edited after the run started ({where}); it hashes to "
                          f"{have}, not {want} as the folder name says. Restore it, or start a new run with the new "
                          f"values (`clavs run ... key=value`), which gets its own folder")
    if config is not None:
        diffs = config_differences(saved, config, ignore=RESUME_MAY_CHANGE)
        if diffs:
            raise RunDirError(f"{run.path}: this run directory was made for another config "
                              f"({'; '.join(diffs[:6])}); start a new run directory instead of continuing this one")
    return saved


def check_or_write_scenario(run: RunDir, scenario: Any, *, resuming: bool) -> None:
    """Save the task split of a new run; on resume, refuse to continue if the data now split differently."""
    path = run.path / SCENARIO_FILE
    current = json.loads(json.dumps(scenario.to_dict(), default=str))
    if resuming and path.exists():
        saved = json.loads(path.read_text())
        if saved != current:
            raise RunDirError(f"{path}: the tasks built from the data now differ from those this run started with "
                             f"(has the dataset at data.root changed?); start a new run directory instead")
        return
    atomic_write_json(path, current)
