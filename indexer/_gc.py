"""The garbage collector's pace during a sync.

A scan makes and drops millions of small objects (records, tuples), freed by reference counting; the
cyclic collector still runs after every 700 allocations by default, each time walking every young
object, and walks everything the process holds (its modules, the caller's data) in each full
collection. In the reader thread it holds the GIL while it walks, and the scan's thread waits for it.
Measured on a sync of 1M documents, that cost a seventh of the scan (bench/RESULTS.md, driver notes).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000  # allocations between collections of the youngest generation


@contextmanager
def fewer_collections() -> Iterator[None]:
    """For the block: what exists now is left out of collections (`gc.freeze`), and the youngest
    generation is collected after YOUNG_THRESHOLD allocations instead of 700. Restored after it."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], YOUNG_THRESHOLD), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
