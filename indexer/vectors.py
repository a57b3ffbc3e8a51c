"""Read-only, lazily read views of an index's vectors, rows aligned with document ids."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from .errors import ChunkMissingError, StoreError
from .store import VectorStore

__all__ = ["DocumentIds", "VectorView"]


class _Snapshot:
    """The (id, slot) pairs of the served documents as of one moment, read on first use.

    The read transaction is opened when the view is made and held until the pairs are read, so that ids
    and vectors always come from the same state of the manifest, even while a sync commits.

    `compact` may move vectors after that moment, and removes the chunk files it packed: `relocate`
    looks the snapshot's contents up again by hash. That is safe because a content keeps its hash when
    it moves and a chunk number is never used twice, so an old slot reads its own vector or nothing.
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection], index_dir: Path) -> None:
        self._connect = connect
        self._index_dir = index_dir
        self._conn: sqlite3.Connection | None = connect()
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()  # pins the WAL snapshot
        self._ids: list[str] | None = None
        self._slots: np.ndarray | None = None
        self._hashes: list[bytes] = []
        self.checksums: dict[int, bytes] = {}

    def load(self) -> tuple[list[str], np.ndarray]:
        if self._ids is None or self._slots is None:
            assert self._conn is not None
            rows = self._conn.execute("""SELECT d.id, c.slot, c.hash FROM documents d JOIN contents c
                ON c.hash = d.ready_hash WHERE d.deleted = 0 ORDER BY c.slot, d.id""").fetchall()
            self.checksums = self._read_checksums(self._conn)
            self._conn.execute("COMMIT")
            self._conn.close()
            self._conn = None
            self._ids = [r[0] for r in rows]
            self._slots = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
            self._hashes = [r[2] for r in rows]
        return self._ids, self._slots

    @staticmethod
    def _read_checksums(conn: sqlite3.Connection) -> dict[int, bytes]:
        """The chunks' whole-file checksums (none in a read-only manifest from before they were kept)."""
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone() is None:
            return {}
        return dict(conn.execute("SELECT chunk, substr(checksum, 1, 8) FROM chunks").fetchall())

    def relocate(self) -> bool:
        """Look every content of the snapshot up again (after a compact). True if a slot moved.
        Raises StoreError if a content is gone altogether (compact dropped it)."""
        _, slots = self.load()
        conn = self._connect()
        try:
            now = dict(conn.execute("SELECT hash, slot FROM contents WHERE state = 'done'").fetchall())
            self.checksums.update(self._read_checksums(conn))
        finally:
            conn.close()
        moved = np.fromiter((now.get(h, -1) for h in self._hashes), dtype=np.int64, count=len(slots))
        gone = int((moved < 0).sum())
        if gone:
            raise StoreError(
                f"{gone} vector(s) of this snapshot of {self._index_dir} were removed by `indexer compact` "
                "after it was taken (their documents were deleted or changed since); take a new snapshot "
                "with vectors()")
        if np.array_equal(moved, slots):
            return False
        slots[:] = moved
        return True


def read_served(store: VectorStore, slots: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The vectors at `slots`, which served documents point at: a row that reads as NaN (a chunk
    damaged since it was written) is an error, never returned as a vector."""
    rows = store.read_slots(slots, out=out)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = slots[~finite]
        shown = ", ".join(str(int(s)) for s in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise StoreError(f"{len(bad)} served vector(s) of {store.path.parent} read as NaN (slot(s) {shown}): "
                         f"the store is damaged. Run `indexer verify {store.path.parent} --repair`, then "
                         "sync the same sources again")
    return rows


class DocumentIds(Sequence[str]):
    """The ids of the served documents, in the row order of the matching VectorView."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self._snapshot = snapshot

    def __len__(self) -> int:
        return len(self._snapshot.load()[0])

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self._snapshot.load()[0][i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot.load()[0])

    def __repr__(self) -> str:
        return f"DocumentIds(n={len(self)})"


class VectorView:
    """An (n, dim) read-only matrix whose rows are read from the store's chunk files on demand.

    `np.asarray(view)` gives the whole matrix; `view[i]`, `view[a:b]` and `view[[i, j]]` read only the
    chunks they need. Chunk files are memory-mapped.
    """

    def __init__(self, snapshot: _Snapshot, store: VectorStore) -> None:
        self._snapshot = snapshot
        self._store = store
        self.dtype = store.dtype
        self.ndim = 2

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._snapshot.load()[1]), self._store.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            if isinstance(rows, (int, np.integer)):  # one row: it is 1-D, the rest index its columns
                return self[rows][cols]
            return self[rows][(slice(None), *cols)]
        if isinstance(key, (int, np.integer)):
            return self._readonly(self._read([int(key)])[0])
        return self._readonly(self._read(key))

    def read_into(self, rows: slice, out: np.ndarray) -> None:
        """Read rows `rows` into `out` (export writes a memory-mapped .npy this way)."""
        self._read(rows, out=out)

    def _read(self, key: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `key` of the view; looked up again once if a compact moved them since the snapshot."""
        slots = self._snapshot.load()[1]
        self._store.expected.update(self._snapshot.checksums)
        try:
            return read_served(self._store, slots[key], out=out)
        except ChunkMissingError:
            if not self._snapshot.relocate():  # nothing moved: the chunk is really missing
                raise
        self._store.expected.update(self._snapshot.checksums)
        return read_served(self._store, slots[key], out=out)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self._read(slice(None))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"VectorView(shape={self.shape}, dtype={self.dtype})"

    @staticmethod
    def _readonly(a: np.ndarray) -> np.ndarray:
        a.flags.writeable = False
        return a


def vectors_of(ids: Sequence[str], slots_of: Callable[[Sequence[str]], dict[str, int]],
               store: VectorStore) -> np.ndarray:
    """The vectors of `ids`, looked up by `slots_of`; looked up again once if a compact moved them."""
    try:
        return _vectors_of(ids, slots_of(ids), store)
    except ChunkMissingError:
        return _vectors_of(ids, slots_of(ids), store)


def _vectors_of(ids: Sequence[str], slots_by_id: dict[str, int], store: VectorStore) -> np.ndarray:
    missing = [i for i in ids if i not in slots_by_id]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise KeyError(f"{len(missing)} id(s) have no vector in this index (unknown, deleted, or not "
                       f"embedded yet): {shown}")
    return read_served(store, np.array([slots_by_id[i] for i in ids], dtype=np.int64))
