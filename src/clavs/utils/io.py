"""Atomic file writes (a run killed at any instant leaves the old file or the new one, never a torn one)
and the sha256 of a file, which caches record and check."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call `write(fileobj)` on a temporary file in the target's folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; the file gets the user's umask like any other
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in blocks (cache entries can be hundreds of MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text), "w")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data), "wb")


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON with NaN/inf written as null (JSON has no NaN)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=indent) + "\n")


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _json_safe(obj.item())
    return obj


def read_yaml_mapping(path: str | os.PathLike, error: type[Exception], *, where: str | None = None,
                      missing: str | None = None, expected: str = "a mapping") -> dict[str, Any]:
    """A YAML file that must hold a mapping; every failure raises `error` with a message naming the
    file (`where`, default the path; `missing`: the message for an absent file)."""
    label = where or str(path)
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise error(missing or f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{label}: cannot read ({e})") from None
    return parse_yaml_mapping(text, label, error, expected=expected)


def parse_yaml_mapping(text: str, where: str, error: type[Exception], *, expected: str = "a mapping") -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise error(f"{where}: holds a {type(data).__name__}, not {expected}")
    return data
