"""The pretrained-weights cache: where the weights of given settings live (:func:`pretrained_path`),
:func:`ensure_pretrained` (pretrain once, under a file lock, then reuse), and the json report written
after the weights as the completion marker (settings, metrics, wall times, sha256 of the weights).

The package ships the default settings' weights for the kernels clavs pins on x86-64
(``shipped/v<VERSION>-<kernels>/``): `clavs pretrain` made them, and makes the same bits again
(tests/test_reproducible_builds.py, `-m slow`). A first run copies them into the cache, after
checking their sha256, instead of spending minutes pretraining; `force=True` pretrains anyway."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from clavs.data.synth.identities import Identity
from clavs.pretrain.data import pretraining_identities
from clavs.pretrain.settings import DEFAULT, KINDS, VERSION, Kind, PretrainSettings
from clavs.utils.io import atomic_write_bytes, atomic_write_json, sha256_file
from clavs.utils.locks import file_lock


# ------------------------------------------------------------------------------------------ paths
def pretrained_path(kind: Kind, settings: PretrainSettings = DEFAULT) -> Path:
    """Where `ensure_pretrained(kind, settings=settings)` keeps its weights (default settings:
    ``cache_home()/pretrained/v<VERSION>-<kernels>/<kind>_tiny.pt``; others get a folder named by their digest)."""
    from clavs.utils.kernels import kernel_tag
    from clavs.utils.paths import cache_home

    _check_kind(kind)
    # The CPU kernels are part of the key: the same settings under other kernels give other bits.
    folder = f"v{VERSION}-{kernel_tag()}" if settings == DEFAULT else f"v{VERSION}-{kernel_tag()}-{settings.digest()}"
    return cache_home() / "pretrained" / folder / f"{kind}_tiny.pt"


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown encoder kind {kind!r} to pretrain; expected one of {KINDS}")


SHIPPED = Path(__file__).with_name("shipped")


def shipped_path(kind: Kind) -> Path | None:
    """The weights shipped with the package for the default settings under this machine's kernels
    (None when there are none: other kernels, e.g. aarch64, pretrain)."""
    from clavs.utils.kernels import kernel_tag

    path = SHIPPED / f"v{VERSION}-{kernel_tag()}" / f"{kind}_tiny.pt"
    return path if path.is_file() and path.with_suffix(".json").is_file() else None


def _install_shipped(kind: Kind, path: Path) -> bool:
    """Copy the shipped weights and their report into the cache if their sha256 holds; False if
    there are none or they are damaged (then the caller pretrains)."""
    import warnings

    source = shipped_path(kind)
    if source is None:
        return False
    settings = json.loads(source.with_suffix(".json").read_text()).get("settings")
    if _problem(source) is not None or settings != json.loads(json.dumps(asdict(DEFAULT))):
        warnings.warn(f"{source}: the shipped weights do not match their report (sha256 or settings); "
                      f"pretraining instead", stacklevel=3)
        return False
    atomic_write_bytes(path, source.read_bytes())
    atomic_write_bytes(path.with_suffix(".json"), source.with_suffix(".json").read_bytes())  # last: the marker
    return True


def _problem(path: Path) -> str | None:
    """None if the weights exist and match the sha256 their json report records, else what is wrong."""
    report = path.with_suffix(".json")
    if not path.is_file() or not report.is_file():
        return "absent"
    try:
        recorded = json.loads(report.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as e:
        return f"its report {report.name} is unreadable ({e})"
    if recorded != sha256_file(path):
        return f"its sha256 differs from the one {report.name} records"
    return None


def _is_complete(path: Path) -> bool:
    """The weights and their report exist and the weights' sha256 is the recorded one."""
    return _problem(path) is None


def ensure_pretrained(kind: Kind, *, force: bool = False, progress: Any = True,
                      settings: PretrainSettings | None = None) -> Path:
    """Return the cached pretrained weights of the tiny `kind` encoder ('visual' | 'audio'),
    pretraining them first when absent (or when `force`).

    progress: True (own rich progress bars), False, or a live ``rich.progress.Progress`` to add bars to.
    settings: defaults to :data:`DEFAULT`. The weights file is written atomically, then its json
    (the completion marker, with the weights' sha256); a lock file serialises concurrent callers.
    Weights whose sha256 is not the recorded one are never used: they are pretrained again.
    """
    _check_kind(kind)
    settings = DEFAULT if settings is None else settings
    path = pretrained_path(kind, settings)
    if _is_complete(path) and not force:
        return path
    with file_lock(path.with_name(f".{kind}_tiny.lock"), f"the pretrained {kind} encoder ({path.parent})"):
        if _is_complete(path) and not force:  # another process finished while we waited
            return path
        problem = _problem(path)
        if problem != "absent" and not force:  # damaged weights are never used: made again (deterministic)
            print(f"note: pretrained {kind} weights {path} are damaged ({problem}); replacing them",
                  file=sys.stderr, flush=True)
        if settings == DEFAULT and not force and _install_shipped(kind, path):
            return path
        from clavs.pretrain import train  # here: train.py imports this module (for the report)

        job = train.pretrain_visual if kind == "visual" else train.pretrain_audio
        job(settings, path, progress=progress)
    return path


# -------------------------------------------------------------------------------------- report
def _identity_record(idents: list[Identity]) -> list[dict[str, Any]]:
    return [{"name": i.name, "visual": asdict(i.visual), "sound": asdict(i.sound)} for i in idents]


def _write_report(path: Path, kind: str, settings: PretrainSettings, metrics: dict[str, Any],
                  timings: dict[str, float], extra: dict[str, Any]) -> None:
    atomic_write_json(path.with_suffix(".json"), {
        "kind": kind, "version": VERSION, "settings": asdict(settings), "settings_digest": settings.digest(),
        "metrics": metrics, "wall_seconds": {k: round(v, 3) for k, v in timings.items()},
        "torch": torch.__version__, "sha256": sha256_file(path),
        "identities": _identity_record(pretraining_identities(settings)), **extra,
    })
