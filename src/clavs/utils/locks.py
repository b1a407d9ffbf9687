"""File locks: one writer per cache entry, per dataset build and per run directory.

`file_lock(path, what)` takes an exclusive `fcntl.flock` on `path` (created if absent, with the
holder's pid written into it). If another process holds it, a line naming that process goes to
stderr and the call waits. flock is released when its holder dies, so a lock file left by a killed
process never blocks anyone.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Callable, Iterator

from clavs.errors import CacheError


def _holder(handle) -> str:
    try:
        handle.seek(0)
        text = handle.read().strip()
    except OSError:
        text = ""
    return f"pid {text}" if text.isdigit() else "another process"


def _default_notify(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, what: str, *, notify: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path` for the block; `what` names the guarded thing in messages."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: atomic renames still keep files whole
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+")
    except OSError as e:
        raise CacheError(f"cannot create the lock file {path} for {what}: {e.strerror or e}; "
                         f"the folder must be writable (for the cache: point CLAVS_HOME at a writable folder)") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            (notify or _default_notify)(f"waiting for {what}: locked by {_holder(handle)} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError:
            pass  # the pid is only for messages
        try:
            yield
        finally:
            try:
                handle.truncate(0)
            except OSError:
                pass
            fcntl.flock(handle, fcntl.LOCK_UN)
