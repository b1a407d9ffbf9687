"""The failures clavs expects, and how the command line shows them.

Every expected failure (a bad config value, a damaged file, a refused resume, a folder that cannot be
written) is a :class:`ClavsError` or one of the library exceptions :func:`user_message` knows; the
`clavs` command prints it as ``error: <message>`` (one or two lines naming the file, key or value and
the fix) and exits with code 2. ``clavs --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class ClavsError(Exception):
    """An expected failure; the message names the file, key or value and says what to do."""


class CacheError(ClavsError):
    """A cache folder cannot be used (not writable, a file where a folder should be, ...)."""


class RunDirError(ClavsError, ValueError):
    """A run directory cannot be used as asked (a resume that would mix configurations, a foreign
    checkpoint, a folder that is not a run directory)."""


class CheckpointError(RunDirError):
    """A task checkpoint cannot be read or does not belong to the run; the message names the file."""


def short_reason(e: BaseException, limit: int = 240) -> str:
    """'<Type>: <first line of the message>', cut to `limit` characters: a library's error (torch's
    unpickler writes a page) inside a message of ours that names the file."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _under(path: str | os.PathLike, folder: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(folder))
        return True
    except ValueError:
        return False


def os_error_message(e: OSError) -> str:
    """'<file>: <reason>' for an OSError, with a hint where the fix is known."""
    name = e.filename if e.filename is not None else ""
    reason = e.strerror or str(e)
    text = f"{name}: {reason}" if name else str(e)
    if e.filename2 is not None:
        text += f" (-> {e.filename2})"
    hint = ""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS) and name:
        from clavs.utils.paths import cache_home

        if _under(name, cache_home()):
            hint = "the cache folder is not writable: point CLAVS_HOME at a writable folder"
        else:
            hint = "not writable here: choose another folder (e.g. --runs-dir) or fix its permissions"
    elif e.errno == errno.ENOSPC:
        hint = "the disk is full: free space or point CLAVS_HOME / --runs-dir elsewhere"
    elif e.errno == errno.ELOOP:
        hint = "a symbolic link points to itself (or a loop of links)"
    elif e.errno in (errno.ENOTDIR, errno.EEXIST) and name:
        hint = "a file stands where a folder is needed"
    return f"{text}; {hint}" if hint else text


def user_message(e: BaseException) -> str | None:
    """The message to show for an expected failure, or None for an unexpected one (a bug)."""
    from clavs.config import ConfigError
    from clavs.data.avsbench import AVSBenchFileError, MetadataError
    from clavs.engine.loop import TrainingDiverged

    if isinstance(e, (ClavsError, ConfigError, MetadataError, AVSBenchFileError, TrainingDiverged)):
        return str(e)
    known = _library_errors()
    if isinstance(e, known):
        return str(e)
    if isinstance(e, OSError):
        return os_error_message(e)
    if isinstance(e, (ValueError, FileExistsError)):
        return str(e)
    return None


def _library_errors() -> tuple[type[BaseException], ...]:
    """Errors of the weights loaders, which name the file in their message."""
    out: list[type[BaseException]] = []
    try:
        from clavs.models.encoders.visual import WeightsLoadError

        out.append(WeightsLoadError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from clavs.models.encoders.cnn14 import CheckpointError as Cnn14CheckpointError

        out.append(Cnn14CheckpointError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(out)
