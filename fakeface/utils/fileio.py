"""Crash-safe file writes shared by generation, the fast path and anything that must never leave half a file."""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

TEMP_MARK = ".tmp-"


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every filesystem allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` so that ``path`` is either absent or complete, never partial.

    Temporary file (hidden, named with :data:`TEMP_MARK` so leftovers of a
    killed process can be recognised and removed), fsync, rename, fsync dir.
    """
    path = Path(path)
    temp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{threading.get_ident()}")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)
