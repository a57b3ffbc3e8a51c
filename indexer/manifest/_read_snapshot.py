"""A reader's snapshot of the manifest (`Index.vectors`, `Index.chunks`): taken when the view is made,
read on first use, relocated after a compact."""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from ._reads import (
    ServedRows,
    begin_snapshot,
    chunk_file_checksums,
    done_slots,
    end_snapshot,
    served_chunks,
    served_documents,
)


class ReadSnapshot:
    """What `read(conn)` returns (a tuple, ServedRows first) as of one moment, read on first use.

    The read transaction is opened when the view is made and held until the rows are read, so that ids
    and vectors always come from the same state of the manifest, even while a sync commits.

    `compact` may move vectors after that moment, and removes the chunk files it packed: `relocate`
    looks the snapshot's contents (a long document's chunks included) up again by hash. That is safe
    because a content keeps its hash when it moves and a chunk number is never used twice, so an old
    slot reads its own vector or nothing.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], index_dir: Path,
                 read: Callable[[sqlite3.Connection], Any]) -> None:
        self._connect = connect
        self._index_dir = index_dir
        self._read = read
        self._conn: sqlite3.Connection | None = connect()
        begin_snapshot(self._conn)
        self._value: Any = None
        self.checksums: dict[int, bytes] = {}

    def load(self) -> Any:
        if self._conn is not None:
            with _gc_paused():
                self._value = self._read(self._conn)
            self.checksums = chunk_file_checksums(self._conn)
            end_snapshot(self._conn)
            self._conn.close()
            self._conn = None
        return self._value

    def relocate(self) -> bool:
        """Look every content of the snapshot up again (after a compact). True if a slot moved.
        Raises StoreError if a content is gone altogether (compact dropped it)."""
        rows: ServedRows = self.load()[0]
        conn = self._connect()
        try:
            now = done_slots(conn)
            self.checksums.update(chunk_file_checksums(conn))
        finally:
            conn.close()
        # A mean's row (no hash of its own) keeps its group; its chunks are looked up in `parts`.
        slots = np.fromiter((s if h is None else now.get(h, -1)
                             for s, h in zip(rows.slots.tolist(), rows.hashes, strict=True)),
                            dtype=np.int64, count=len(rows.slots))
        parts = np.fromiter((now.get(h, -1) for h in rows.part_hashes), dtype=np.int64,
                            count=len(rows.parts))
        gone = sum(1 for h in rows.hashes if h is not None and h not in now) + int((parts < 0).sum())
        if gone:
            raise StoreError(
                f"{gone} vector(s) of this snapshot of {self._index_dir} were removed by `indexer compact` "
                "after it was taken (their documents were deleted or changed since); take a new snapshot "
                "with vectors()")
        if np.array_equal(slots, rows.slots) and np.array_equal(parts, rows.parts):
            return False
        rows.slots[:] = slots
        rows.parts[:] = parts
        return True


def documents_snapshot(connect: Callable[[], sqlite3.Connection], index_dir: Path) -> ReadSnapshot:
    """The served documents' rows (`served_documents`), as a 1-tuple."""
    return ReadSnapshot(connect, index_dir, lambda conn: (served_documents(conn),))


def chunks_snapshot(connect: Callable[[], sqlite3.Connection], index_dir: Path) -> ReadSnapshot:
    """The served chunk rows: (rows, ordinals, starts, ends) (`served_chunks`)."""
    return ReadSnapshot(connect, index_dir, served_chunks)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """A snapshot turns millions of rows into Python objects and keeps them in lists; the cyclic
    garbage collector would walk those growing lists again and again, for nothing (no cycle is made
    here): measured 3x slower at 2M rows, and worse than linear in N (bench/RESULTS.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
