"""Read-only, lazily read views of an index's vectors: document rows aligned with ids, and chunk rows.

A document that fits the model's window has one vector, its own. A long document, embedded as chunks,
is read as one row too: the L2-normalized mean of its chunk vectors (computed in float64 when its row is
read, never stored), so `vectors()` and `get()` keep one row a document whatever the chunking. The
chunks themselves, with their character spans, are `chunks()`: search them to find the passage.
"""

from __future__ import annotations

import gc
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from ._sql import SERVED_HASH, in_batches
from .errors import ChunkMissingError, ManifestError, StoreError
from .manifest._wholes import has_wholes
from .store import VectorStore

__all__ = ["Chunks", "DocumentIds", "VectorView"]

# Served documents: one that fits is its content's slot; a long one the slots of its chunks, in order.
_SINGLE = f"""FROM documents d JOIN contents c ON c.hash = {SERVED_HASH} WHERE d.deleted = 0
    AND c.parts = 0"""
_CHUNKED = f"""FROM documents d JOIN contents w ON w.hash = {SERVED_HASH} AND w.parts > 0
    JOIN text_chunks t ON t.whole = w.hash JOIN contents p ON p.hash = t.hash WHERE d.deleted = 0"""


@dataclass(frozen=True)
class _Rows:
    """Rows to read. `slots[i] >= 0` is row i's slot; `slots[i] < 0` makes row i the mean of the chunk
    slots `parts[starts[g]:starts[g + 1]]`, g = -1 - slots[i]. `hashes` and `part_hashes` are the
    contents at `slots` (None for a mean) and at `parts`: a snapshot relocates them after a compact."""

    ids: list[str]
    slots: np.ndarray
    starts: np.ndarray
    parts: np.ndarray
    hashes: list[bytes | None]
    part_hashes: list[bytes]


def _served_singles(conn: sqlite3.Connection) -> tuple[list[str], np.ndarray, list[bytes | None]]:
    """ids, slots and hashes of every served document that fits the model's window, in (slot, id)
    order: what `SELECT d.id, c.slot, c.hash {_SINGLE} ORDER BY c.slot, d.id` gives, in time linear
    in N (but for the sorts, done in numpy).

    That join looks each document's content up by hash, a random B-tree probe per document, then
    sorts: fine at 1M, but superlinear once the manifest outgrows SQLite's cache (bench/RESULTS.md,
    scale simulation). Here each table is read once in its own order instead (contents through the
    index on slot, whose rows lie in claim order, as slots were given; documents in id order) and
    joined in numpy on the hash. Only contents of documents that fit have a slot (a whole's vector is
    its chunks'), so the slot index holds exactly the contents `_SINGLE` may join."""
    c_hashes, c_slots = _columns(conn.execute("SELECT hash, slot FROM contents WHERE slot IS NOT NULL"))
    ids: list[str] = []
    d_parts: list[bytes] = []
    d_hashes: list[bytes] = []
    before: dict[int, bytes] = {}  # document k -> the content it served before (ready_hash)
    cur = conn.execute("SELECT id, hash, ready_hash FROM documents WHERE deleted = 0")
    while batch := cur.fetchmany(_FETCH):
        batch_ids, batch_hashes, batch_ready = zip(*batch, strict=True)
        before.update((len(ids) + k, h) for k, h in enumerate(batch_ready)
                      if h is not None and h != batch_hashes[k])
        ids.extend(batch_ids)
        d_hashes.extend(batch_hashes)
        d_parts.append(b"".join(batch_hashes))
    # A plain content has a slot exactly when it is done: a document serves its own where that has one
    # (SERVED_HASH), else the one it served before.
    found = _lookup(c_hashes, _hash_keys(b"".join(d_parts)))  # content row of each document, or -1
    waiting = [k for k in before if found[k] < 0]
    if waiting:
        found[waiting] = _lookup(c_hashes, _hash_keys(b"".join(before[k] for k in waiting)))
        for k in waiting:
            d_hashes[k] = before[k]
    served = np.flatnonzero(found >= 0)
    # Stable: documents sharing a content (one slot) stay in id order, as documents are read.
    served = served[np.argsort(c_slots[found[served]], kind="stable")]
    rows = served.tolist()
    return [ids[k] for k in rows], c_slots[found[served]], [d_hashes[k] for k in rows]


_FETCH = 65_536  # rows a fetch: Python tuples for a batch, never for the whole table


def _columns(cur: sqlite3.Cursor) -> tuple[np.ndarray, np.ndarray]:
    """(hash keys, int64 values) of a query's (16-byte hash, integer) rows."""
    hashes: list[bytes] = []
    values: list[np.ndarray] = []
    while batch := cur.fetchmany(_FETCH):
        batch_hashes, batch_values = zip(*batch, strict=True)
        hashes.append(b"".join(batch_hashes))
        values.append(np.array(batch_values, dtype=np.int64))
    return _hash_keys(b"".join(hashes)), np.concatenate(values) if values else np.zeros(0, np.int64)


def _hash_keys(raw: bytes) -> np.ndarray:
    """16-byte hashes end to end as an (n, 2) array of native uint64: (high, low) halves."""
    if len(raw) % 16:
        raise ManifestError("a content hash in the manifest is not 16 bytes long: the manifest is damaged; "
                         "run `indexer verify`")
    return np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)


def _lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each key (a row of `keys`), the row of `table` holding it, or -1 (both (n, 2) hash keys)."""
    if not len(table):
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(table[:, 0])
    high = table[order, 0]
    if (high[1:] == high[:-1]).any():
        # Two hashes share their high half (not seen in practice): search on both halves, as integers.
        order = np.lexsort((table[:, 1], table[:, 0]))
        both = table[order, 0].astype(object) * 2**64 + table[order, 1].astype(object)
        at = np.searchsorted(both, keys[:, 0].astype(object) * 2**64 + keys[:, 1].astype(object))
    else:
        # The keys searched in their own sorted order: each search starts where the one before ended,
        # several times faster than searching them in random order (a cache miss a step).
        by_key = np.argsort(keys[:, 0])
        at = np.empty(len(keys), dtype=np.intp)
        at[by_key] = np.searchsorted(high, keys[by_key, 0])
    rows = order[np.minimum(at, len(order) - 1)]
    return np.where((table[rows, 0] == keys[:, 0]) & (table[rows, 1] == keys[:, 1]), rows, -1)


def _documents(conn: sqlite3.Connection, where: str = "", params: Sequence[str] = ()) -> _Rows:
    if where:
        single = conn.execute(f"SELECT d.id, c.slot, c.hash {_SINGLE}{where} ORDER BY c.slot, d.id",
                              params).fetchall()
        ids, slots = [r[0] for r in single], np.array([r[1] for r in single], dtype=np.int64)
        hashes: list[bytes | None] = [r[2] for r in single]
    else:
        ids, slots, hashes = _served_singles(conn)
    # The chunked query probes contents once per document: skipped where there is no long document.
    chunked = conn.execute(f"SELECT d.id, t.ordinal, p.slot, p.hash {_CHUNKED}{where} ORDER BY d.id, "
                           "t.ordinal", params).fetchall() if where or has_wholes(conn) else []
    groups: list[int] = []  # the slots of the long documents' rows: -1 - their group
    starts: list[int] = []
    parts: list[int] = []
    part_hashes: list[bytes] = []
    for k, (doc_id, ordinal, slot, h) in enumerate(chunked):
        if ordinal == 0 or chunked[k - 1][0] != doc_id:
            groups.append(-1 - len(starts))
            hashes.append(None)
            starts.append(len(parts))
            ids.append(doc_id)
        parts.append(slot)
        part_hashes.append(h)
    starts.append(len(parts))
    return _Rows(ids, np.concatenate((slots, np.array(groups, dtype=np.int64))),
                 np.array(starts, dtype=np.int64), np.array(parts, dtype=np.int64), hashes, part_hashes)


def _document_rows(conn: sqlite3.Connection) -> tuple[_Rows]:
    return (_documents(conn),)


def _chunks(conn: sqlite3.Connection, where: str = "",
            params: Sequence[str] = ()) -> tuple[_Rows, np.ndarray, np.ndarray, np.ndarray]:
    # In slot order, so that reading all of them walks the store's chunk files once, in order.
    found = conn.execute(f"""SELECT d.id, 0, c.slot, 0, c.chars, c.hash {_SINGLE}{where}
        UNION ALL SELECT d.id, t.ordinal, p.slot, t.char_start, t.char_end, p.hash {_CHUNKED}{where}
        ORDER BY 3, 1, 2""", [*params, *params]).fetchall()
    columns = np.array([r[1:5] for r in found], dtype=np.int64).reshape(-1, 4)  # ordinal, slot, start, end
    rows = _Rows([r[0] for r in found], columns[:, 1].copy(), np.zeros(1, np.int64), np.zeros(0, np.int64),
                 [r[5] for r in found], [])
    return rows, columns[:, 0].copy(), columns[:, 2].copy(), columns[:, 3].copy()


class _Snapshot:
    """What `read(conn)` returns (a tuple, _Rows first) as of one moment, read on first use.

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
        self._conn.execute("BEGIN")
        self._conn.execute("SELECT 1 FROM documents LIMIT 1").fetchall()  # pins the WAL snapshot
        self._value: Any = None
        self.checksums: dict[int, bytes] = {}

    def load(self) -> Any:
        if self._conn is not None:
            with _gc_paused():
                self._value = self._read(self._conn)
            self.checksums = chunk_checksums(self._conn)
            self._conn.execute("COMMIT")
            self._conn.close()
            self._conn = None
        return self._value

    def relocate(self) -> bool:
        """Look every content of the snapshot up again (after a compact). True if a slot moved.
        Raises StoreError if a content is gone altogether (compact dropped it)."""
        rows: _Rows = self.load()[0]
        conn = self._connect()
        try:
            now = dict(conn.execute("SELECT hash, slot FROM contents WHERE state = 'done' "
                                    "AND slot IS NOT NULL").fetchall())
            self.checksums.update(chunk_checksums(conn))
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


def chunk_checksums(conn: sqlite3.Connection) -> dict[int, bytes]:
    """The chunks' whole-file checksums (none in a read-only manifest from before they were kept)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunks'").fetchone() is None:
        return {}
    return dict(conn.execute("SELECT chunk, substr(checksum, 1, 8) FROM chunks").fetchall())


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


def read_rows(store: VectorStore, rows: _Rows, selected: np.ndarray,
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


def documents_snapshot(connect: Callable[[], sqlite3.Connection], index_dir: Path) -> _Snapshot:
    return _Snapshot(connect, index_dir, _document_rows)


def chunks_snapshot(connect: Callable[[], sqlite3.Connection], index_dir: Path) -> _Snapshot:
    return _Snapshot(connect, index_dir, _chunks)


def vectors_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> np.ndarray:
    """The rows of `ids`, in that order, checked as `vectors()` checks them; looked up again once if a
    compact moved them. KeyError names the ids that have none."""
    try:
        return _vectors_of(conn, ids, store)
    except ChunkMissingError:
        return _vectors_of(conn, ids, store)


def _vectors_of(conn: sqlite3.Connection, ids: Sequence[str], store: VectorStore) -> np.ndarray:
    store.expected.update(chunk_checksums(conn))
    found: dict[str, int] = {}
    parts: list[_Rows] = []
    for part, marks in in_batches(ids):
        rows = _documents(conn, f" AND d.id IN ({marks})", part)
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
    store.expected.update(chunk_checksums(conn))
    found = [_chunks(conn, f" AND d.id IN ({marks})", part) for part, marks in in_batches(ids)]
    rows = [f[0] for f in found]
    ordinals, starts, ends = (np.concatenate([f[k] for f in found] or [np.zeros(0, np.int64)])
                              for k in (1, 2, 3))
    slots = np.concatenate([r.slots for r in rows] or [np.zeros(0, np.int64)])
    return ChunkRows([i for r in rows for i in r.ids], ordinals, starts, ends, read_served(store, slots))


def served_chunk_count(conn: sqlite3.Connection) -> int:
    """Chunk rows of the served documents (a document that fits is one), as `Index.chunks()` counts them."""
    found = conn.execute(f"SELECT (SELECT count(*) {_SINGLE}) + (SELECT count(*) {_CHUNKED})").fetchone()
    return int(found[0])


def content_vectors(conn: sqlite3.Connection, store: VectorStore,
                    contents: Sequence[tuple[bytes, int | None]]) -> np.ndarray:
    """The vectors of served contents given as (hash, slot): a whole (a long document, slot None) is
    the normalized mean of its chunks, as `vectors()` gives it. A chunk without a slot (moved or
    re-queued since the caller's snapshot) reads as NaN, which the caller must refuse; a slot that
    reads as NaN in the store (damaged) or a chunk that fails its checksum is an error."""
    store.expected.update(chunk_checksums(conn))
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
                 np.array(parts, dtype=np.int64), [], [])
    return read_rows(store, rows, rows.slots)


def _merge(parts: list[_Rows]) -> _Rows:
    """Several _Rows as one, their group numbers and chunk positions shifted to match."""
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
    return _Rows(ids, np.concatenate(slots) if slots else np.zeros(0, np.int64), np.concatenate(starts),
                 np.concatenate(chunk_slots) if chunk_slots else np.zeros(0, np.int64), hashes, part_hashes)
