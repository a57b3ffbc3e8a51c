"""Read-only, lazily read views of an index's vectors: document rows aligned with ids, and chunk rows.

A document that fits the model's window has one vector, its own. A long document, embedded as chunks,
is read as one row too: the L2-normalized mean of its chunk vectors (computed in float64 when its row is
read, never stored), so `vectors()` and `get()` keep one row a document whatever the chunking. The
chunks themselves, with their character spans, are `chunks()`: search them to find the passage.

The rows come from the manifest (a reader's snapshot, `manifest.ReadSnapshot`, or the rows of given
ids); the vectors from the store's memory-mapped chunk files, checked against their checksums and
refused where they read as NaN.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np

from .errors import ChunkMissingError, StoreError
from .manifest import (
    ReadSnapshot,
    ServedRows,
    chunk_file_checksums,
    served_chunks_among,
    served_documents_among,
    whole_chunk_slots,
)
from .store import VectorStore

__all__ = ["Chunks", "DocumentIds", "VectorView"]


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


def read_rows(store: VectorStore, rows: ServedRows, selected: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """The vectors of the rows whose `rows.slots` are `selected`: a chunked document's row is the
    normalized mean of its chunks, computed in float64 and given in the store's dtype. A slot that
    reads as NaN, a chunk of a long document included, is refused (`read_served`)."""
    selected = np.asarray(selected, dtype=np.int64).reshape(-1)
    single = selected >= 0
    if single.all():
        return read_served(store, selected, out=out)
    if out is None:
        out = np.empty((len(selected), store.dim), dtype=store.dtype)
    if single.any():
        out[single] = read_served(store, selected[single])
    groups = -1 - selected[~single]
    lengths = rows.starts[groups + 1] - rows.starts[groups]
    offsets = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    # Every chunk of every selected document, in one gather: the positions in rows.parts.
    positions = np.repeat(rows.starts[groups] - offsets, lengths) + np.arange(int(lengths.sum()))
    vectors = read_served(store, rows.parts[positions]).astype(np.float64)
    sums = np.add.reduceat(vectors, offsets, axis=0)
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    out[~single] = sums
    return out


class DocumentIds(Sequence[str]):
    """The ids of the served documents, in the row order of the matching VectorView."""

    def __init__(self, snapshot: ReadSnapshot) -> None:
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

    def __init__(self, snapshot: ReadSnapshot, store: VectorStore) -> None:
        self._snapshot = snapshot
        self._store = store
        self.dtype = store.dtype
        self.ndim = 2

    def _rows(self) -> ServedRows:
        return self._snapshot.load()[0]  # type: ignore[no-any-return]

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._rows().slots), self._store.dim)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            first, cols = key[0], key[1:]
            if isinstance(first, (int, np.integer)):  # one row: it is 1-D, the rest index its columns
                return self[first][cols]
            return self[first][(slice(None), *cols)]
        if isinstance(key, (int, np.integer)):
            return self._readonly(self._read([int(key)])[0])
        return self._readonly(self._read(key))

    def read_into(self, rows: slice, out: np.ndarray) -> None:
        """Read rows `rows` into `out` (export writes a memory-mapped .npy this way)."""
        self._read(rows, out=out)

    def _read(self, key: Any, out: np.ndarray | None = None) -> np.ndarray:
        """Rows `key` of the view; looked up again once if a compact moved them since the snapshot."""
        rows = self._rows()
        self._store.expected.update(self._snapshot.checksums)
        try:
            return read_rows(self._store, rows, rows.slots[key], out=out)
        except ChunkMissingError:
            if not self._snapshot.relocate():  # nothing moved: the chunk is really missing
                raise
        self._store.expected.update(self._snapshot.checksums)
        return read_rows(self._store, rows, rows.slots[key], out=out)

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


class Chunks:
    """The chunk rows of the served documents, from one snapshot of the manifest, read on first use.

    Row i is chunk `ordinals[i]` (0, 1, ... in text order) of document `ids[i]`: the text
    `text[starts[i]:ends[i]]` of the document as it was embedded (a document that fits the model's
    window is one chunk, 0 to its length). `vectors` is a VectorView over the same rows (read from the
    memory-mapped store on demand). Rows are in store order, not grouped by document; a chunk shared by
    several documents is a row of each.
    """

    def __init__(self, snapshot: ReadSnapshot, store: VectorStore) -> None:
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


def vectors_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> np.ndarray:
    """The rows of `ids`, in that order, checked as `vectors()` checks them; looked up again once if a
    compact moved them. KeyError names the ids that have none."""
    try:
        return _vectors_of(conn, ids, store)
    except ChunkMissingError:
        return _vectors_of(conn, ids, store)


def _vectors_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> np.ndarray:
    store.expected.update(chunk_file_checksums(conn))
    found: dict[str, int] = {}
    parts: list[ServedRows] = []
    for rows in served_documents_among(conn, ids):
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


@dataclass(frozen=True)
class ChunkRows:
    """Chunk rows as `Index.chunks()` gives them, read at once: row i is chunk `ordinals[i]` of
    document `ids[i]`, its text `[starts[i]:ends[i]]` of the document's, its vector `vectors[i]`."""

    ids: list[str]
    ordinals: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    vectors: np.ndarray


def chunks_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> ChunkRows:
    """The chunk rows of the served documents among `ids` (a push sends a batch of documents this
    way), read from `conn`'s state of the manifest; a vector that reads as NaN is refused."""
    store.expected.update(chunk_file_checksums(conn))
    found = served_chunks_among(conn, ids)
    rows = [f[0] for f in found]
    ordinals, starts, ends = (np.concatenate([f[k] for f in found] or [np.zeros(0, np.int64)])
                              for k in (1, 2, 3))
    slots = np.concatenate([r.slots for r in rows] or [np.zeros(0, np.int64)])
    return ChunkRows([i for r in rows for i in r.ids], ordinals, starts, ends, read_served(store, slots))


def content_vectors(conn: sqlite3.Connection, store: VectorStore,
                    contents: Sequence[tuple[bytes, int | None]]) -> np.ndarray:
    """The vectors of served contents given as (hash, slot): a whole (a long document, slot None) is
    the normalized mean of its chunks, as `vectors()` gives it. A chunk without a slot (moved or
    re-queued since the caller's snapshot) reads as NaN, which the caller must refuse; a slot that
    reads as NaN in the store (damaged) or a chunk that fails its checksum is an error."""
    store.expected.update(chunk_file_checksums(conn))
    slots: list[int] = []
    starts: list[int] = []
    parts: list[int] = []
    whole = True
    for h, slot in contents:
        if slot is not None:
            slots.append(slot)
            continue
        chunk_slots = whole_chunk_slots(conn, h)
        whole = whole and bool(chunk_slots) and None not in chunk_slots
        slots.append(-1 - len(starts))
        starts.append(len(parts))
        parts.extend(s if s is not None else 0 for s in chunk_slots)
    if not whole:
        return np.full((len(slots), store.dim), np.nan, dtype=store.dtype)
    starts.append(len(parts))
    rows = ServedRows([], np.array(slots, dtype=np.int64), np.array(starts, dtype=np.int64),
                      np.array(parts, dtype=np.int64), [], [])
    return read_rows(store, rows, rows.slots)


def _merge(parts: list[ServedRows]) -> ServedRows:
    """Several ServedRows as one, their group numbers and chunk positions shifted to match."""
    ids: list[str] = []
    hashes: list[bytes | None] = []
    part_hashes: list[bytes] = []
    slots, starts, chunk_slots = [], [], []
    groups = offset = 0
    for rows in parts:
        ids.extend(rows.ids)
        hashes.extend(rows.hashes)
        part_hashes.extend(rows.part_hashes)
        slots.append(np.where(rows.slots >= 0, rows.slots, rows.slots - groups))
        starts.append(rows.starts[:-1] + offset)
        chunk_slots.append(rows.parts)
        groups += len(rows.starts) - 1
        offset += len(rows.parts)
    starts.append(np.array([offset], dtype=np.int64))
    return ServedRows(ids, np.concatenate(slots) if slots else np.zeros(0, np.int64), np.concatenate(starts),
                      np.concatenate(chunk_slots) if chunk_slots else np.zeros(0, np.int64), hashes,
                      part_hashes)
