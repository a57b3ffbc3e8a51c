"""What readers read: the served documents and chunks (`Index.vectors`, `chunks`, `get`, push), the
chunk files' checksums, where contents are now (after a compact), a long document's chunk slots, the
content each document serves (search's texts).

Functions over a connection: a reader's own, holding one snapshot of the manifest (WAL) from
`begin_snapshot` to `end_snapshot` (or for a block, `snapshot`), or the manifest's own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ._hash_join import hash_keys, lookup
from ._queries import named_queries
from ._sql import SERVED_HASH, in_batches
from ._wholes import has_wholes

_QUERIES = named_queries("reads.sql")

# Served documents: one that fits is its content's slot; a long one the slots of its chunks, in order.
_SINGLE = f"""FROM documents d JOIN contents c ON c.hash = {SERVED_HASH} WHERE d.deleted = 0
    AND c.parts = 0"""
_CHUNKED = f"""FROM documents d JOIN contents w ON w.hash = {SERVED_HASH} AND w.parts > 0
    JOIN text_chunks t ON t.whole = w.hash JOIN contents p ON p.hash = t.hash WHERE d.deleted = 0"""

_FETCH = 65_536  # rows a fetch: Python tuples for a batch, never for the whole table


@dataclass(frozen=True)
class ServedRows:
    """Rows to read. `slots[i] >= 0` is row i's slot; `slots[i] < 0` makes row i the mean of the chunk
    slots `parts[starts[g]:starts[g + 1]]`, g = -1 - slots[i]. `hashes` and `part_hashes` are the
    contents at `slots` (None for a mean) and at `parts`: a snapshot relocates them after a compact."""

    ids: list[str]
    slots: np.ndarray
    starts: np.ndarray
    parts: np.ndarray
    hashes: list[bytes | None]
    part_hashes: list[bytes]


def begin_snapshot(conn: sqlite3.Connection) -> None:
    """Take `conn`'s snapshot now, and hold it until `end_snapshot`."""
    conn.execute("BEGIN")
    conn.execute(_QUERIES["pin_snapshot"]).fetchall()


def end_snapshot(conn: sqlite3.Connection) -> None:
    conn.execute("COMMIT")


@contextmanager
def snapshot(connect: Callable[[], sqlite3.Connection]) -> Iterator[sqlite3.Connection]:
    """A connection of its own (from `connect`) whose reads in the block see one state of the manifest;
    closed after it."""
    conn = connect()
    try:
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def served_documents(conn: sqlite3.Connection) -> ServedRows:
    """Every served document: first those that fit (in slot order), then the long ones (in id order)."""
    return _documents(conn)


def served_documents_among(conn: sqlite3.Connection, ids: Sequence[str]) -> list[ServedRows]:
    """The served documents among `ids`, one ServedRows a part of them that one statement binds."""
    return [_documents(conn, f" AND d.id IN ({marks})", part) for part, marks in in_batches(ids)]


def served_chunks(conn: sqlite3.Connection) -> tuple[ServedRows, np.ndarray, np.ndarray, np.ndarray]:
    """Every chunk row of the served documents (one that fits is one): the rows, and their ordinals,
    character starts and ends."""
    return _chunks(conn)


def served_chunks_among(conn: sqlite3.Connection, ids: Sequence[str],
                        ) -> list[tuple[ServedRows, np.ndarray, np.ndarray, np.ndarray]]:
    """`served_chunks` of the documents among `ids`, one a part of them that one statement binds."""
    return [_chunks(conn, f" AND d.id IN ({marks})", part) for part, marks in in_batches(ids)]


def served_chunk_count(conn: sqlite3.Connection) -> int:
    """Chunk rows of the served documents (a document that fits is one), as `Index.chunks()` counts them."""
    found = conn.execute(f"SELECT (SELECT count(*) {_SINGLE}) + (SELECT count(*) {_CHUNKED})").fetchone()
    return int(found[0])


def served_hashes(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, bytes]:
    """The content each of the live documents among `ids` serves, where it serves one."""
    found: dict[str, bytes] = {}
    for part, marks in in_batches(ids):
        found.update((i, h) for i, h in conn.execute(f"""SELECT d.id, {SERVED_HASH} FROM documents d
            WHERE d.deleted = 0 AND d.id IN ({marks})""", part) if h is not None)
    return found


def whole_chunk_slots(conn: sqlite3.Connection, whole: bytes) -> list[int | None]:
    """The slots of a long document's chunks, in order (None: a chunk not done)."""
    return [s for (s,) in conn.execute(_QUERIES["whole_chunk_slots"], (whole,))]


def done_slots(conn: sqlite3.Connection) -> dict[bytes, int]:
    """Content hash -> slot of every done content that has one: where a snapshot's contents are now."""
    return dict(conn.execute(_QUERIES["done_slots"]).fetchall())


def chunk_file_checksums(conn: sqlite3.Connection) -> dict[int, bytes]:
    """The chunks' whole-file checksums (none in a read-only manifest from before they were kept)."""
    if conn.execute(_QUERIES["has_chunks_table"]).fetchone() is None:
        return {}
    return dict(conn.execute(_QUERIES["chunk_file_checksums"]).fetchall())


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
    c_hashes, c_slots = _columns(conn.execute(_QUERIES["slotted_contents"]))
    ids: list[str] = []
    d_parts: list[bytes] = []
    d_hashes: list[bytes] = []
    before: dict[int, bytes] = {}  # document k -> the content it served before (ready_hash)
    cur = conn.execute(_QUERIES["live_documents"])
    while batch := cur.fetchmany(_FETCH):
        batch_ids, batch_hashes, batch_ready = zip(*batch, strict=True)
        before.update((len(ids) + k, h) for k, h in enumerate(batch_ready)
                      if h is not None and h != batch_hashes[k])
        ids.extend(batch_ids)
        d_hashes.extend(batch_hashes)
        d_parts.append(b"".join(batch_hashes))
    # A plain content has a slot exactly when it is done: a document serves its own where that has one
    # (SERVED_HASH), else the one it served before.
    found = lookup(c_hashes, hash_keys(b"".join(d_parts)))  # content row of each document, or -1
    waiting = [k for k in before if found[k] < 0]
    if waiting:
        found[waiting] = lookup(c_hashes, hash_keys(b"".join(before[k] for k in waiting)))
        for k in waiting:
            d_hashes[k] = before[k]
    served = np.flatnonzero(found >= 0)
    # Stable: documents sharing a content (one slot) stay in id order, as documents are read.
    served = served[np.argsort(c_slots[found[served]], kind="stable")]
    rows = served.tolist()
    return [ids[k] for k in rows], c_slots[found[served]], [d_hashes[k] for k in rows]


def _columns(cur: sqlite3.Cursor) -> tuple[np.ndarray, np.ndarray]:
    """(hash keys, int64 values) of a query's (16-byte hash, integer) rows."""
    hashes: list[bytes] = []
    values: list[np.ndarray] = []
    while batch := cur.fetchmany(_FETCH):
        batch_hashes, batch_values = zip(*batch, strict=True)
        hashes.append(b"".join(batch_hashes))
        values.append(np.array(batch_values, dtype=np.int64))
    return hash_keys(b"".join(hashes)), np.concatenate(values) if values else np.zeros(0, np.int64)


def _documents(conn: sqlite3.Connection, where: str = "", params: Sequence[str] = ()) -> ServedRows:
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
    return ServedRows(ids, np.concatenate((slots, np.array(groups, dtype=np.int64))),
                      np.array(starts, dtype=np.int64), np.array(parts, dtype=np.int64), hashes, part_hashes)


def _chunks(conn: sqlite3.Connection, where: str = "",
            params: Sequence[str] = ()) -> tuple[ServedRows, np.ndarray, np.ndarray, np.ndarray]:
    # In slot order, so that reading all of them walks the store's chunk files once, in order.
    found = conn.execute(f"""SELECT d.id, 0, c.slot, 0, c.chars, c.hash {_SINGLE}{where}
        UNION ALL SELECT d.id, t.ordinal, p.slot, t.char_start, t.char_end, p.hash {_CHUNKED}{where}
        ORDER BY 3, 1, 2""", [*params, *params]).fetchall()
    columns = np.array([r[1:5] for r in found], dtype=np.int64).reshape(-1, 4)  # ordinal, slot, start, end
    rows = ServedRows([r[0] for r in found], columns[:, 1].copy(), np.zeros(1, np.int64),
                      np.zeros(0, np.int64), [r[5] for r in found], [])
    return rows, columns[:, 0].copy(), columns[:, 2].copy(), columns[:, 3].copy()
