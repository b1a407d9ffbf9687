"""The pretrained-weights cache: where the weights of given settings live (:func:`pretrained_path`),
:func:`ensure_pretrained` (pretrain once, under a file lock, then reuse), and the json report written
after the weights as the completion marker (settings, metrics, wall times, sha256 of the weights).

The package ships the default settings' weights for the kernels clavs pins on x86-64
(``shipped/v<VERSION>-<kernels>/``): `clavs pretrain` made them, and makes the same bits again
(tests/test_reproducible_builds.py, `-m slow`). A first run copies them into the cache, after
checking their sha256, instead of spending minutes pretraining; `force=True` pretrains anyway."""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch

from clavs.data.synth.identities import Identity
from clavs.pretrain.data import pretraining_identities
from clavs.pretrain.settings import DEFAULT, KINDS, VERSION, Kind, PretrainSettings
from clavs.utils.io import atomic_write_json


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
    return path if _is_complete(path) else None


def _install_shipped(kind: Kind, path: Path) -> bool:
    """Copy the shipped weights and their report into the cache if their sha256 holds; False if
    there are none or they are damaged (then the caller pretrains)."""
    import json
    import shutil
    import warnings

    source = shipped_path(kind)
    if source is None:
        return False
    report = json.loads(source.with_suffix(".json").read_text())
    if _sha256(source) != report.get("sha256") or report.get("settings") != json.loads(json.dumps(asdict(DEFAULT))):
        warnings.warn(f"{source}: the shipped weights do not match their report (sha256 or settings); "
                      f"pretraining instead", stacklevel=3)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    for src, dst in ((source, path), (source.with_suffix(".json"), path.with_suffix(".json"))):  # json last: the marker
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)
    return True


def _is_complete(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".json").is_file()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock so that concurrent runs pretrain once and the others wait (POSIX; no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic renames still keep files whole
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_pretrained(kind: Kind, *, force: bool = False, progress: Any = True,
                      settings: PretrainSettings | None = None) -> Path:
    """Return the cached pretrained weights of the tiny `kind` encoder ('visual' | 'audio'),
    pretraining them first when absent (or when `force`).

    progress: True (own rich progress bars), False, or a live ``rich.progress.Progress`` to add bars to.
    settings: defaults to :data:`DEFAULT`. The weights file is written atomically, then its json
    (the completion marker); a lock file serialises concurrent callers.
    """
    _check_kind(kind)
    settings = DEFAULT if settings is None else settings
    path = pretrained_path(kind, settings)
    if _is_complete(path) and not force:
        return path
    with _file_lock(path.with_name(f".{kind}_tiny.lock")):
        if _is_complete(path) and not force:  # another process finished while we waited
            return path
        if settings == DEFAULT and not force and _install_shipped(kind, path):
            return path
        from clavs.pretrain import train  # here: train.py imports this module (for the report)

        job = train.pretrain_visual if kind == "visual" else train.pretrain_audio
        job(settings, path, progress=progress)
    return path


# -------------------------------------------------------------------------------------- report
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _identity_record(idents: list[Identity]) -> list[dict[str, Any]]:
    return [{"name": i.name, "visual": asdict(i.visual), "sound": asdict(i.sound)} for i in idents]


def _write_report(path: Path, kind: str, settings: PretrainSettings, metrics: dict[str, Any],
                  timings: dict[str, float], extra: dict[str, Any]) -> None:
    atomic_write_json(path.with_suffix(".json"), {
        "kind": kind, "version": VERSION, "settings": asdict(settings), "settings_digest": settings.digest(),
        "metrics": metrics, "wall_seconds": {k: round(v, 3) for k, v in timings.items()},
        "torch": torch.__version__, "sha256": _sha256(path),
        "identities": _identity_record(pretraining_identities(settings)), **extra,
    })
