"""The garbage collector's pace during a sync.

A scan makes and drops millions of small objects (records, tuples), freed by reference counting; the
cyclic collector still runs after every 700 allocations by default, each time walking every young
object, and walks everything the process holds (its modules, the caller's data) in each full
collection. In the reader thread it holds the GIL while it walks, and the scan's thread waits for it:
a seventh of a 1M-document scan (bench/RESULTS.md, driver notes).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000  # allocations between collections of the youngest generation

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, ...] = ()


@contextmanager
def fewer_collections() -> Iterator[None]:
    """For the block: what exists when it starts is left out of collections (`gc.freeze`), and the
    youngest generation is collected after YOUNG_THRESHOLD allocations instead of 700. Blocks may
    overlap (syncs in several threads): the first one in changes the collector, the last one out
    restores it as it was."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_saved[0], YOUNG_THRESHOLD), *_saved[1:])
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.set_threshold(*_saved)
                gc.unfreeze()
