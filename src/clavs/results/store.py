"""The run directory: one folder per run, every file written atomically, `DONE` written last.

Layout (DESIGN.md):
    runs/<experiment>/<protocol>/<method>/seed<k>-<hash>/
        config.yaml     fully resolved config
        matrices.json   {"tasks": T, "metrics": {name: {"R": [[...]], "b": [...]}}}  (null = not evaluated), test clips
        summary.json    {name: {la, aa, a_inc, forgetting, bwt, fwt[, a_auc]}}, test clips
        matrices_val.json, summary_val.json   the same on the validation clips (what choices are made on)
        anytime.json    task-free streams: the anytime-accuracy curve {"every_steps", "points": [...]}
        profile.json    wall time per task, frames/s, peak memory, parameter counts
        checkpoints/    task_<t>.pt after each task
        log.txt         human-readable log
        sweep.log       a sweep job's stdout and stderr (launch/jobs.py)
        DONE            written last
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from clavs.errors import RunDirError
from clavs.utils.io import atomic_write_json, atomic_write_text, read_yaml_mapping

CONFIG_FILE = "config.yaml"
MATRICES_FILE = "matrices.json"
SUMMARY_FILE = "summary.json"
MATRICES_VAL_FILE = "matrices_val.json"
SUMMARY_VAL_FILE = "summary_val.json"
ANYTIME_FILE = "anytime.json"
PROFILE_FILE = "profile.json"
LOG_FILE = "log.txt"
DONE_FILE = "DONE"
CHECKPOINT_DIR = "checkpoints"

# Keys that change where or how a run is shown, not what it computes, are left out of the hash.
# (engine.threads is also left out: on the CPU it may change the last digits; the CPU presets fix it
# to 1. train.val_matrix only says how many validation rows are recorded: training and the test
# matrix are the same either way; train.keep_checkpoints only which checkpoint files stay on disk.
# Precision, devices and nodes stay in: they change the numbers, e.g. DDP's global batch.)
HASH_EXCLUDED = ("runs_dir", "progress", "engine.threads", "engine.accelerator", "train.val_matrix",
                  "train.keep_checkpoints")
# What `clavs run --resume` may change (--devices, --num-nodes, --accelerator, --no-progress; the folder
# may move).
RESUME_MAY_CHANGE = HASH_EXCLUDED + ("engine.devices", "engine.num_nodes")
_RUN_FOLDER = re.compile(r"^seed-?\d+-([0-9a-f]{8})$")


def config_hash(config: dict[str, Any], length: int = 8) -> str:
    """Stable short hash of the resolved config (sorted-key JSON), ignoring execution-only keys."""
    pruned = json.loads(json.dumps(config, sort_keys=True, default=str))
    for dotted in HASH_EXCLUDED:
        node = pruned
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.get(p, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(leaf, None)
    blob = json.dumps(pruned, sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:length]


def folder_hash(path: str | os.PathLike) -> str | None:
    """The config hash in a run folder's name (`seed<k>-<hash>`), or None for another name."""
    m = _RUN_FOLDER.match(Path(path).name)
    return m.group(1) if m else None


def config_differences(old: dict[str, Any], new: dict[str, Any], ignore: tuple[str, ...] = HASH_EXCLUDED) -> list[str]:
    """Dotted keys whose values differ between two configs, as 'train.lr: 0.001 -> 0.5' (sorted)."""
    from clavs.config import flatten

    a = flatten(json.loads(json.dumps(old, default=str)))
    b = flatten(json.loads(json.dumps(new, default=str)))
    out = []
    for key in sorted(a.keys() | b.keys()):
        if key in ignore:
            continue
        va, vb = a.get(key, "<absent>"), b.get(key, "<absent>")
        if va != vb or type(va) is not type(vb):
            out.append(f"{key}: {va!r} -> {vb!r}")
    return out


def run_dir_for(config: dict[str, Any], runs_dir: str | os.PathLike) -> Path:
    return (
        Path(runs_dir)
        / str(config.get("experiment", "default"))
        / str(config["protocol"]["name"])
        / str(config["method"]["name"])
        / f"seed{config['seed']}-{config_hash(config)}"
    )


def _nan_to_none(matrix: Any) -> Any:
    if isinstance(matrix, (list, tuple)):
        return [_nan_to_none(x) for x in matrix]
    if matrix is None:
        return None
    value = float(matrix)
    return None if math.isnan(value) or math.isinf(value) else value


@dataclass
class RunDir:
    """Read and write the files of one run directory."""

    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    # -- writing ---------------------------------------------------------------------------
    def create(self) -> "RunDir":
        (self.path / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        return self

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.path / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))

    def write_matrices(self, tasks: int, matrices: dict[str, dict[str, Any]], split: str = "test") -> None:
        """`matrices` maps metric -> {"R": T x T (NaN/None where not evaluated), "b": [T] or None}."""
        payload = {
            "tasks": tasks,
            "metrics": {
                name: {"R": _nan_to_none(m["R"]), "b": _nan_to_none(m.get("b"))}
                for name, m in matrices.items()
            },
        }
        atomic_write_json(self.path / _split_file(MATRICES_FILE, split), payload)

    def write_summary(self, summary: dict[str, dict[str, float]], split: str = "test") -> None:
        atomic_write_json(self.path / _split_file(SUMMARY_FILE, split), summary)

    def write_anytime(self, anytime: dict[str, Any]) -> None:
        atomic_write_json(self.path / ANYTIME_FILE, anytime)

    def write_profile(self, profile: dict[str, Any]) -> None:
        atomic_write_json(self.path / PROFILE_FILE, profile)

    def log(self, message: str) -> None:
        """Append one timestamped line to log.txt (appends are line-atomic for our sizes)."""
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / LOG_FILE, "a") as f:
            f.write(f"[{stamp}] {message}\n")

    def mark_done(self) -> None:
        atomic_write_text(self.path / DONE_FILE, datetime.now(timezone.utc).isoformat() + "\n")

    # -- reading ---------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return (self.path / DONE_FILE).exists()

    def checkpoint_path(self, task: int) -> Path:
        return self.path / CHECKPOINT_DIR / f"task_{task}.pt"

    def latest_checkpoint(self) -> tuple[int, Path] | None:
        """The highest-numbered task checkpoint, or None."""
        best: tuple[int, Path] | None = None
        ckdir = self.path / CHECKPOINT_DIR
        if not ckdir.is_dir():
            return None
        for p in ckdir.glob("task_*.pt"):
            try:
                t = int(p.stem.split("_", 1)[1])
            except ValueError:
                continue
            if best is None or t > best[0]:
                best = (t, p)
        return best

    def config(self) -> dict[str, Any]:
        return read_yaml_mapping(self.path / CONFIG_FILE, RunDirError, expected="a clavs run config",
                                 missing=f"{self.path}: no {CONFIG_FILE} here; not a clavs run directory")

    def _json(self, name: str) -> Any:
        path = self.path / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing (is this a clavs run directory?)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunDirError(f"{path}: not valid JSON ({e})") from None
        except OSError as e:
            raise RunDirError(f"{path}: cannot read ({e})") from None

    def matrices(self, split: str = "test") -> dict[str, Any]:
        return self._json(_split_file(MATRICES_FILE, split))

    def summary(self, split: str = "test") -> dict[str, Any]:
        return self._json(_split_file(SUMMARY_FILE, split))

    def profile(self) -> dict[str, Any]:
        return self._json(PROFILE_FILE)


def _split_file(name: str, split: str) -> str:
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    return name if split == "test" else name.replace(".json", "_val.json")


@dataclass(frozen=True)
class RunInfo:
    path: Path
    experiment: str
    protocol: str
    method: str
    seed: int
    done: bool


def list_runs(runs_dir: str | os.PathLike, *, done_only: bool = False,
              damaged: list[tuple[Path, str]] | None = None) -> list[RunInfo]:
    """Every run directory (a folder holding config.yaml) under `runs_dir`, sorted by path.

    A run whose config.yaml cannot be read is skipped; `damaged` (if given) receives (path, reason).
    """
    out = []
    for cfg in sorted(Path(runs_dir).rglob(CONFIG_FILE)):
        run = RunDir(cfg.parent)
        try:
            c = run.config()
            protocol, method = c.get("protocol", {}), c.get("method", {})
            seed = c.get("seed", -1)
            if not isinstance(protocol, dict) or not isinstance(method, dict) or isinstance(seed, bool) \
                    or not isinstance(seed, int):
                raise RunDirError(f"{cfg}: not a clavs run config (protocol, method or seed malformed)")
        except RunDirError as e:
            if damaged is not None:
                damaged.append((run.path, str(e)))
            continue
        info = RunInfo(
            path=run.path,
            experiment=str(c.get("experiment", "default")),
            protocol=str(protocol.get("name", "?")),
            method=str(method.get("name", "?")),
            seed=seed,
            done=run.done,
        )
        if info.done or not done_only:
            out.append(info)
    return out


def load_run(path: str | os.PathLike) -> dict[str, Any]:
    """Config, matrices, summary and profile of one run (test clips; `*_val` the validation clips;
    `anytime` for task-free streams), as plain dicts."""
    run = RunDir(Path(path))

    def optional(name: str, read: Any) -> Any:
        return read() if (run.path / name).exists() else {}

    return {
        "path": run.path,
        "config": run.config(),
        "matrices": run.matrices(),
        # An unfinished run has matrices for the tasks done so far but no summary yet.
        "summary": run.summary() if (run.path / SUMMARY_FILE).exists() or run.done else {},
        "matrices_val": optional(MATRICES_VAL_FILE, lambda: run.matrices("val")),
        "summary_val": optional(SUMMARY_VAL_FILE, lambda: run.summary("val")),
        "anytime": optional(ANYTIME_FILE, lambda: run._json(ANYTIME_FILE)),
        "profile": optional(PROFILE_FILE, run.profile),
        "done": run.done,
    }


