"""The maintenance lock of an index: an advisory `flock` on its `vectors.zarr` directory.

Syncs and verifies hold it shared for their whole run (any number at once: syncs coordinate through
their claims); `compact`, which moves vectors and deletes chunk files, holds it exclusively, so that it
never runs next to a sync, a verify or another compact. The kernel drops the lock of a killed process,
so a crash never leaves an index locked. The directory itself is locked, not a lock file: nothing has to
be created, so it works the same on read-only media.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import IndexBusyError

__all__ = ["maintenance_lock"]


@contextmanager
def maintenance_lock(directory: Path, *, exclusive: bool, wait_s: float, busy: str) -> Iterator[None]:
    """Hold the lock on `directory` (shared or exclusive) for the block. Waits up to `wait_s` seconds
    for a conflicting holder, then raises IndexBusyError(`busy`)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        deadline = time.monotonic() + wait_s
        mode = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        while True:
            try:
                fcntl.flock(fd, mode)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise IndexBusyError(busy) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
