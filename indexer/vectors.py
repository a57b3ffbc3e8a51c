"""Read-only, lazily read views of an index's vectors: document rows aligned with ids, and chunk rows.

A document that fits the model's window has one vector, its own. A long document, embedded as chunks,
is read as one row too: the L2-normalized mean of its chunk vectors (computed in float64 when its row is
read, never stored), so `vectors()` and `get()` keep one row a document whatever the chunking. The
chunks themselves, with their character spans, are `chunks()`: search them to find the passage.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .store import VectorStore

__all__ = ["Chunks", "DocumentIds", "VectorView"]

# Served documents: one that fits is its content's slot; a long one the slots of its chunks, in order.
_SINGLE = """FROM documents d JOIN contents c ON c.hash = d.ready_hash WHERE d.deleted = 0
    AND c.parts = 0"""
_CHUNKED = """FROM documents d JOIN contents w ON w.hash = d.ready_hash AND w.parts > 0
    JOIN text_chunks t ON t.whole = w.hash JOIN contents p ON p.hash = t.hash WHERE d.deleted = 0"""


@dataclass(frozen=True)
class _Rows:
    """Rows to read. `slots[i] >= 0` is row i's slot; `slots[i] < 0` makes row i the mean of the chunk
    slots `parts[starts[g]:starts[g + 1]]`, g = -1 - slots[i]."""

    ids: list[str]
    slots: np.ndarray
    starts: np.ndarray
    parts: np.ndarray


def _documents(conn: sqlite3.Connection, where: str = "", params: Sequence[str] = ()) -> _Rows:
    single = conn.execute(f"SELECT d.id, c.slot {_SINGLE}{where} ORDER BY c.slot, d.id", params).fetchall()
    chunked = conn.execute(f"SELECT d.id, t.ordinal, p.slot {_CHUNKED}{where} ORDER BY d.id, t.ordinal",
                           params).fetchall()
    ids = [r[0] for r in single]
    slots = [r[1] for r in single]
    starts: list[int] = []
    parts: list[int] = []
    for k, (doc_id, ordinal, slot) in enumerate(chunked):
        if ordinal == 0 or chunked[k - 1][0] != doc_id:
            slots.append(-1 - len(starts))
            starts.append(len(parts))
            ids.append(doc_id)
        parts.append(slot)
    starts.append(len(parts))
    return _Rows(ids, np.array(slots, dtype=np.int64), np.array(starts, dtype=np.int64),
                 np.array(parts, dtype=np.int64))


def _document_rows(conn: sqlite3.Connection) -> tuple[_Rows]:
    return (_documents(conn),)


def _chunks(conn: sqlite3.Connection) -> tuple[_Rows, np.ndarray, np.ndarray, np.ndarray]:
    # In slot order, so that reading all of them walks the store's chunk files once, in order.
    found = conn.execute(f"""SELECT d.id, 0, c.slot, 0, c.chars {_SINGLE}
        UNION ALL SELECT d.id, t.ordinal, p.slot, t.char_start, t.char_end {_CHUNKED}
        ORDER BY 3, 1, 2""").fetchall()
    columns = np.array([r[1:] for r in found], dtype=np.int64).reshape(-1, 4)  # ordinal, slot, start, end
    rows = _Rows([r[0] for r in found], columns[:, 1].copy(), np.zeros(1, np.int64), np.zeros(0, np.int64))
    return rows, columns[:, 0].copy(), columns[:, 2].copy(), columns[:, 3].copy()


class _Snapshot:
    """What `read(conn)` returns (a tuple, _Rows first) as of one moment, read on first use.

    The read transaction is opened when the view is made and held until the rows are read, so that ids
    and vectors always come from the same state of the manifest, even while a sync commits.
    """

    def __init__(self, conn: sqlite3.Connection, read: Callable[[sqlite3.Connection], Any]) -> None:
        self._conn: sqlite3.Connection | None = conn
        self._read = read
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()  # pins the WAL snapshot
        self._value: Any = None

    def load(self) -> Any:
        if self._conn is not None:
            self._value = self._read(self._conn)
            self._conn.execute("COMMIT")
            self._conn.close()
            self._conn = None
        return self._value


def read_rows(store: VectorStore, rows: _Rows, selected: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """The vectors of the rows whose `rows.slots` are `selected`: a chunked document's row is the
    normalized mean of its chunks, computed in float64 and given in the store's dtype."""
    selected = np.asarray(selected, dtype=np.int64).reshape(-1)
    single = selected >= 0
    if single.all():
        return store.read_slots(selected, out=out)
    if out is None:
        out = np.empty((len(selected), store.dim), dtype=store.dtype)
    if single.any():
        out[single] = store.read_slots(selected[single])
    groups = -1 - selected[~single]
    lengths = rows.starts[groups + 1] - rows.starts[groups]
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Every chunk of every selected document, in one gather: the positions in rows.parts.
    positions = np.repeat(rows.starts[groups] - offsets, lengths) + np.arange(int(lengths.sum()))
    vectors = store.read_slots(rows.parts[positions]).astype(np.float64)
    sums = np.add.reduceat(vectors, offsets, axis=0)
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    out[~single] = sums
    return out


class DocumentIds(Sequence[str]):
    """The ids of the served documents, in the row order of the matching VectorView."""

    def __init__(self, snapshot: _Snapshot) -> None:
        self._snapshot = snapshot

    def _ids(self) -> list[str]:
        return self._snapshot.load()[0].ids  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self._ids())

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self._ids()[i]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids())

    def __repr__(self) -> str:
        return f"DocumentIds(n={len(self)})"


class VectorView:
    """An (n, dim) read-only matrix whose rows are read from the store's chunk files on demand.

    `np.asarray(view)` gives the whole matrix; `view[i]`, `view[a:b]` and `view[[i, j]]` read only the
    chunks they need. Chunk files are memory-mapped. A long document's row is the normalized mean of
    its chunk vectors, computed when the row is read.
    """

    def __init__(self, snapshot: _Snapshot, store: VectorStore) -> None:
        self._snapshot = snapshot
        self._store = store
        self.dtype = store.dtype
        self.ndim = 2

    def _rows(self) -> _Rows:
        return self._snapshot.load()[0]  # type: ignore[no-any-return]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows().slots), self._store.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        rows = self._rows()
        if isinstance(key, tuple):
            first, cols = key[0], key[1:]
            if isinstance(first, (int, np.integer)):  # one row: it is 1-D, the rest index its columns
                return self[first][cols]
            return self[first][(slice(None), *cols)]
        if isinstance(key, (int, np.integer)):
            return self._readonly(read_rows(self._store, rows, rows.slots[[int(key)]])[0])
        return self._readonly(read_rows(self._store, rows, rows.slots[key]))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        rows = self._rows()
        out = read_rows(self._store, rows, rows.slots)
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


class Chunks:
    """The chunk rows of the served documents, from one snapshot of the manifest, read on first use.

    Row i is chunk `ordinals[i]` (0, 1, ... in text order) of document `ids[i]`: the text
    `text[starts[i]:ends[i]]` of the document as it was embedded (a document that fits the model's
    window is one chunk, 0 to its length). `vectors` is a VectorView over the same rows (read from the
    memory-mapped store on demand). Rows are in store order, not grouped by document; a chunk shared by
    several documents is a row of each.
    """

    def __init__(self, snapshot: _Snapshot, store: VectorStore) -> None:
        self._snapshot = snapshot
        self.ids = DocumentIds(snapshot)
        self.vectors = VectorView(snapshot, store)

    @property
    def ordinals(self) -> np.ndarray:
        return self._snapshot.load()[1]  # type: ignore[no-any-return]

    @property
    def starts(self) -> np.ndarray:
        return self._snapshot.load()[2]  # type: ignore[no-any-return]

    @property
    def ends(self) -> np.ndarray:
        return self._snapshot.load()[3]  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Chunks(n={len(self)}, dim={self.vectors.shape[1]})"


def documents_snapshot(conn: sqlite3.Connection) -> _Snapshot:
    return _Snapshot(conn, _document_rows)


def chunks_snapshot(conn: sqlite3.Connection) -> _Snapshot:
    return _Snapshot(conn, _chunks)


def vectors_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> np.ndarray:
    """The rows of `ids`, in that order. KeyError names the ids that have none."""
    found: dict[str, int] = {}
    parts: list[_Rows] = []
    for start in range(0, len(ids), 500):
        part = list(ids[start:start + 500])
        rows = _documents(conn, f" AND d.id IN ({','.join('?' * len(part))})", part)
        offset = sum(len(p.ids) for p in parts)
        parts.append(rows)
        found.update((doc_id, offset + k) for k, doc_id in enumerate(rows.ids))
    missing = [i for i in ids if i not in found]
    if missing:
        shown = ", ".join(map(repr, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise KeyError(f"{len(missing)} id(s) have no vector in this index (unknown, deleted, or not "
                       f"embedded yet): {shown}")
    merged = _merge(parts)
    return read_rows(store, merged, merged.slots[[found[i] for i in ids]])


def content_vectors(conn: sqlite3.Connection, store: VectorStore,
                    contents: Sequence[tuple[bytes, int | None]]) -> np.ndarray:
    """The vectors of served contents given as (hash, slot): a whole (a long document, slot None) is
    the normalized mean of its chunks, as `vectors()` gives it. A chunk without a slot (moved or
    re-queued since the caller's snapshot) reads as NaN, which the caller must refuse."""
    slots: list[int] = []
    starts: list[int] = []
    parts: list[int] = []
    whole = True
    for h, slot in contents:
        if slot is not None:
            slots.append(slot)
            continue
        chunk_slots = [s for (s,) in conn.execute("""SELECT c.slot FROM text_chunks t JOIN contents c
            ON c.hash = t.hash WHERE t.whole = ? ORDER BY t.ordinal""", (h,))]
        whole = whole and bool(chunk_slots) and None not in chunk_slots
        slots.append(-1 - len(starts))
        starts.append(len(parts))
        parts.extend(s if s is not None else 0 for s in chunk_slots)
    if not whole:
        return np.full((len(slots), store.dim), np.nan, dtype=store.dtype)
    starts.append(len(parts))
    rows = _Rows([], np.array(slots, dtype=np.int64), np.array(starts, dtype=np.int64),
                 np.array(parts, dtype=np.int64))
    return read_rows(store, rows, rows.slots)


def _merge(parts: list[_Rows]) -> _Rows:
    """Several _Rows as one, their group numbers and chunk positions shifted to match."""
    ids: list[str] = []
    slots, starts, chunk_slots = [], [], []
    groups = offset = 0
    for rows in parts:
        ids.extend(rows.ids)
        slots.append(np.where(rows.slots >= 0, rows.slots, rows.slots - groups))
        starts.append(rows.starts[:-1] + offset)
        chunk_slots.append(rows.parts)
        groups += len(rows.starts) - 1
        offset += len(rows.parts)
    starts.append(np.array([offset], dtype=np.int64))
    return _Rows(ids, np.concatenate(slots) if slots else np.zeros(0, np.int64), np.concatenate(starts),
                 np.concatenate(chunk_slots) if chunk_slots else np.zeros(0, np.int64))
