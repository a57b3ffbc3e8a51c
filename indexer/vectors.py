"""Read-only, lazily read views of an index's vectors, rows aligned with document ids."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from .store import VectorStore

__all__ = ["DocumentIds", "VectorView"]


class _Snapshot:
    """The (id, slot) pairs of the served documents as of one moment, read on first use.

    The read transaction is opened when the view is made and held until the pairs are read, so that ids
    and vectors always come from the same state of the manifest, even while a sync commits.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn: sqlite3.Connection | None = conn
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()  # pins the WAL snapshot
        self._ids: list[str] | None = None
        self._slots: np.ndarray | None = None

    def load(self) -> tuple[list[str], np.ndarray]:
        if self._ids is None or self._slots is None:
            assert self._conn is not None
            rows = self._conn.execute("""SELECT d.id, c.slot FROM documents d JOIN contents c
                ON c.hash = d.ready_hash WHERE d.deleted = 0 ORDER BY c.slot, d.id""").fetchall()
            self._conn.execute("COMMIT")
            self._conn.close()
            self._conn = None
            self._ids = [r[0] for r in rows]
            self._slots = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        return self._ids, self._slots


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
        slots = self._snapshot.load()[1]
        if isinstance(key, tuple):
            rows, cols = key[0], key[1:]
            if isinstance(rows, (int, np.integer)):  # one row: it is 1-D, the rest index its columns
                return self[rows][cols]
            return self[rows][(slice(None), *cols)]
        if isinstance(key, (int, np.integer)):
            return self._readonly(self._store.read_slots(slots[[int(key)]])[0])
        return self._readonly(self._store.read_slots(slots[key]))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        out = self._store.read_slots(self._snapshot.load()[1])
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


def vectors_of(ids: Sequence[str], slots_by_id: dict[str, int], store: VectorStore) -> np.ndarray:
    missing = [i for i in ids if i not in slots_by_id]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise KeyError(f"{len(missing)} id(s) have no vector in this index (unknown, deleted, or not "
                       f"embedded yet): {shown}")
    return store.read_slots([slots_by_id[i] for i in ids])
