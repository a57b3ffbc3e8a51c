"""`indexer push`: mirror an index into a vector store table, sending only what changed.

The manifest keeps, per target, one row per document the target may hold: (doc id, content hash), the
hash NULL while unknown. A push reads, from one snapshot of the manifest, the documents the target
lacks or holds in another version (upserts) and the ones it holds that the index no longer serves
(deletes), and for each batch:

    1. marks the batch's rows unknown (hash NULL) and commits,
    2. sends the batch to the target (insert, upsert or delete: each idempotent),
    3. records what the target now holds (the hash; or no row after a delete) and commits.

A push killed anywhere leaves each document either recorded as what the target holds, or unknown;
the next push sends every unknown served document again and deletes every unknown unserved one, so
after it completes the table holds exactly the served documents of its snapshot, whatever happened
before. A sync may run meanwhile: what it changes after the snapshot goes with the next push.

A table holds one row a document, or at chunk level (the default for a chunked index) one row a chunk:
(id, chunk, start, end, vector), the rows `Index.chunks()` gives. The manifest tracks documents either
way: a document's chunks (their spans and vectors) follow from its content hash, so a document whose
hash the target holds holds exactly its chunks, and one sent again has all its rows replaced (the rows
of chunks it no longer has removed). The level is read from the table itself (a "chunk" column), so
it cannot drift from what the table holds.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._faults import crash_point
from .errors import IndexerError
from .index import Index, vector_array, vector_schema
from .manifest import push_deletes, push_upserts, served_chunk_count, served_count, snapshot
from .settings import Settings
from .targets import Target, open_target
from .vectors import chunks_of, content_vectors

__all__ = ["LEVELS", "PushReport", "push"]

BATCH_ROWS = 4096  # documents per batch: per insert/replace call and per delete
LEVELS = ("documents", "chunks")


@dataclass
class PushReport:
    target: str
    level: str = "documents"  # what a table row is: a document, or a chunk of one
    upserted: int = 0  # documents whose rows were written (new, changed, or left unknown by a stopped push)
    deleted: int = 0  # documents whose rows were removed
    upserted_rows: int = 0  # table rows written for the upserted documents (at chunk level, their chunks)
    seconds: float = 0.0
    rows: int = 0  # rows in the table after the push
    served: int = 0  # documents the index served at the push's snapshot
    served_rows: int = 0  # the rows those documents make at this level: what `rows` should be
    everything: bool = False  # every served document was sent (first push, --replace, table lost)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def push(index: str | Path | Index, to: str, *, table: str = "vectors", level: str | None = None,
         replace: bool = False, settings: Settings | None = None, batch_rows: int = BATCH_ROWS) -> PushReport:
    """Bring the table `table` of target `to` ("lancedb:PATH") in line with the index: upsert new
    and changed documents, delete the ones the index no longer serves. `level`: one row a document
    ("documents"; a long one the normalized mean of its chunks) or a chunk ("chunks"); by default the
    level the table holds, and for a new table "chunks" if the index is chunked. With `replace`, the
    table is dropped and rewritten (at another level, if asked)."""
    if level not in (None, *LEVELS):
        raise IndexerError(f"push level {level!r}: choose {' or '.join(LEVELS)}")
    t0 = time.perf_counter()
    target = open_target(to, table)
    own = not isinstance(index, Index)
    idx = Index.open(index, settings) if not isinstance(index, Index) else index
    try:
        with idx.maintenance():  # a compact moving vectors meanwhile would stop the push part-way
            report = _push(idx, target, level, replace, batch_rows)
    except (IndexerError, sqlite3.Error, KeyboardInterrupt):
        raise
    except Exception as exc:  # the store's client raises its own kinds (I/O, schema, service errors)
        reason = " ".join(str(exc).split())
        raise IndexerError(f"{target.key}: {type(exc).__name__}: {reason}; the push stopped part-way, "
                           "nothing is lost: fix that and push again to finish") from exc
    finally:
        target.close()
        if own:
            idx.close()
    report.seconds = time.perf_counter() - t0
    return report


def _push(idx: Index, target: Target, asked: str | None, replace: bool, batch_rows: int) -> PushReport:
    manifest = idx.manifest
    target_id = manifest.push_target(target.key)
    columns = target.columns()
    if replace:
        target.drop()
        columns = None
    existed = columns is not None
    if existed and target_id is None and target.count() > 0:
        raise IndexerError(f"{target.key} already holds {target.count()} rows that this index never "
                           "pushed; push to another --table, or give --replace to drop and rewrite it")
    level = _level(idx, target, asked, columns)
    report = PushReport(target=target.key, level=level)
    if target_id is not None and not existed:
        if not replace:
            report.warnings.append(f"{target.key} is gone (dropped since the last push?); pushing "
                                   "everything")
        manifest.forget_pushed(target_id)
    report.everything = target_id is None or not existed
    target_id = manifest.push_target(target.key, create=True)
    assert target_id is not None
    target.create(vector_schema(idx.store.dim, idx.store.dtype, chunks=level == "chunks"))

    # One snapshot for the whole diff, on a connection of its own: our writes go through the manifest's.
    with snapshot(manifest.reader) as reads:
        report.served = served_count(reads)
        report.served_rows = served_chunk_count(reads) if level == "chunks" else report.served
        for ids in _batches(push_deletes(reads, target_id), batch_rows):
            doc_ids = [r[0] for r in ids]
            manifest.mark_pushing(target_id, doc_ids)
            target.delete(doc_ids)
            crash_point("push-after-delete")
            manifest.mark_unpushed(target_id, doc_ids)
            report.deleted += len(doc_ids)
        for rows in _batches(push_upserts(reads, target_id), batch_rows):
            report.upserted_rows += _send(idx, reads, target, target_id, rows, level)
            report.upserted += len(rows)
    manifest.finish_push(target_id)
    report.rows = target.count()
    if report.rows != report.served_rows:
        what = f"{report.served} documents" + (f" ({report.served_rows} chunks)" if level == "chunks" else "")
        report.warnings.append(
            f"{target.key} has {report.rows} rows but the index served {what} when "
            "the push began: rows were added or removed outside indexer, or a sync changed the index "
            "meanwhile. Push again; if they still differ, push --replace rewrites the table")
    return report


def _level(idx: Index, target: Target, asked: str | None, columns: list[str] | None) -> str:
    """The level to push at: the one the table holds (another is refused: a table of mixed rows would
    answer searches wrongly), or for a new table the one asked, by default chunks if the index is chunked."""
    if columns is None:
        return asked or ("chunks" if idx.config.chunking else "documents")
    held = "chunks" if "chunk" in columns else "documents"
    if asked not in (None, held):
        raise IndexerError(f"{target.key} holds one row a {held[:-1]} (it was pushed at --level {held}); "
                           f"nothing was sent. Push at --level {held}, or to another --table, or give "
                           f"--replace to drop it and rewrite it at --level {asked}")
    return held


def _send(idx: Index, snapshot: sqlite3.Connection, target: Target, target_id: int, rows: list[Any],
          level: str) -> int:
    """Send one batch of (id, hash, slot, known) rows of documents; returns how many table rows went."""
    manifest = idx.manifest
    doc_ids = [r[0] for r in rows]
    spans: tuple[np.ndarray, ...] = ()
    if level == "chunks":  # the snapshot's chunk rows of these documents, as Index.chunks() reads them
        chunks = chunks_of(snapshot, doc_ids, idx.store)
        row_ids, vectors, spans = chunks.ids, chunks.vectors, (chunks.ordinals, chunks.starts, chunks.ends)
    else:
        # A long document (its served content a whole of chunks, no slot of its own) is sent as the
        # normalized mean of its chunks, the row `vectors()` gives it.
        row_ids, vectors = doc_ids, content_vectors(manifest.conn, idx.store, [(r[1], r[2]) for r in rows])
    if not np.isfinite(vectors).all():  # a slot moved by a compact since the snapshot: never send it
        raise IndexerError(f"{idx.path} changed under the push (was `indexer compact` run?); nothing "
                           "wrong was sent. Run the push again")
    manifest.mark_pushing(target_id, doc_ids)
    known_ids = [r[0] for r in rows if r[3]]  # the target may hold rows of these: replace them
    held = set(known_ids)
    known = np.fromiter((i in held for i in row_ids), dtype=bool, count=len(row_ids))
    if not known.all():
        target.insert(_arrow_rows(idx, row_ids, vectors, spans, np.flatnonzero(~known)))
    if known.any():
        target.replace(known_ids, _arrow_rows(idx, row_ids, vectors, spans, np.flatnonzero(known)))
    crash_point("push-after-upsert")
    manifest.mark_pushed(target_id, [(r[0], r[1]) for r in rows])
    return len(row_ids)


def _arrow_rows(idx: Index, ids: list[str], vectors: np.ndarray, spans: tuple[np.ndarray, ...],
                chosen: np.ndarray) -> object:
    """Rows `chosen` as an Arrow table of the push schema (with the chunk columns if `spans`)."""
    import pyarrow as pa

    schema = vector_schema(idx.store.dim, idx.store.dtype, chunks=bool(spans))
    columns = [pa.array([ids[i] for i in chosen], pa.string())]
    columns += [pa.array(values[chosen], f.type) for values, f in zip(spans, list(schema)[1:], strict=False)]
    return pa.Table.from_arrays([*columns, vector_array(vectors[chosen])], schema=schema)


def _batches(cursor: sqlite3.Cursor, size: int) -> Iterator[list[Any]]:
    while rows := cursor.fetchmany(size):
        yield rows
