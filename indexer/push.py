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
from .index import MANIFEST, Index, vector_array, vector_schema
from .manifest import PUSH_DELETES_SQL, PUSH_UPSERTS_SQL, SERVED_COUNT_SQL
from .settings import Settings
from .targets import Target, open_target
from .vectors import content_vectors

__all__ = ["PushReport", "push"]

BATCH_ROWS = 4096  # rows per insert/upsert call and per delete batch


@dataclass
class PushReport:
    target: str
    upserted: int = 0
    deleted: int = 0
    seconds: float = 0.0
    rows: int = 0  # rows in the table after the push
    served: int = 0  # documents the index served at the push's snapshot
    everything: bool = False  # every served document was sent (first push, --replace, table lost)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def push(index: str | Path | Index, to: str, *, table: str = "vectors", replace: bool = False,
         settings: Settings | None = None, batch_rows: int = BATCH_ROWS) -> PushReport:
    """Bring the table `table` of target `to` ("lancedb:PATH") in line with the index: upsert new
    and changed documents, delete the ones the index no longer serves. With `replace`, the table is
    dropped and rewritten."""
    t0 = time.perf_counter()
    target = open_target(to, table)
    own = not isinstance(index, Index)
    idx = Index.open(index, settings) if not isinstance(index, Index) else index
    try:
        report = _push(idx, target, replace, batch_rows)
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


def _push(idx: Index, target: Target, replace: bool, batch_rows: int) -> PushReport:
    manifest, report = idx.manifest, PushReport(target=target.key)
    target_id = manifest.push_target(target.key)
    existed = target.exists()
    if replace:
        target.drop()
        existed = False
    elif existed and target_id is None and target.count() > 0:
        raise IndexerError(f"{target.key} already holds {target.count()} rows that this index never "
                           "pushed; push to another --table, or give --replace to drop and rewrite it")
    if target_id is not None and not existed:
        if not replace:
            report.warnings.append(f"{target.key} is gone (dropped since the last push?); pushing "
                                   "everything")
        manifest.forget_pushed(target_id)
    report.everything = target_id is None or not existed
    target_id = manifest.push_target(target.key, create=True)
    assert target_id is not None
    target.create(vector_schema(idx.store.dim, idx.store.dtype))

    # One snapshot for the whole diff, on a connection of its own: our writes go through the manifest's.
    snapshot = sqlite3.connect(idx.path / MANIFEST, isolation_level=None)
    try:
        snapshot.execute("BEGIN")
        report.served = int(snapshot.execute(SERVED_COUNT_SQL).fetchone()[0])
        for ids in _batches(snapshot.execute(PUSH_DELETES_SQL, (target_id,)), batch_rows):
            doc_ids = [r[0] for r in ids]
            manifest.mark_pushing(target_id, doc_ids)
            target.delete(doc_ids)
            crash_point("push-after-delete")
            manifest.mark_unpushed(target_id, doc_ids)
            report.deleted += len(doc_ids)
        for rows in _batches(snapshot.execute(PUSH_UPSERTS_SQL, (target_id,)), batch_rows):
            report.upserted += _send(idx, target, target_id, rows)
        snapshot.execute("COMMIT")
    finally:
        snapshot.close()
    manifest.finish_push(target_id)
    report.rows = target.count()
    if report.rows != report.served:
        report.warnings.append(
            f"{target.key} has {report.rows} rows but the index served {report.served} documents when "
            "the push began: rows were added or removed outside indexer, or a sync changed the index "
            "meanwhile. Push again; if they still differ, push --replace rewrites the table")
    return report


def _send(idx: Index, target: Target, target_id: int, rows: list[Any]) -> int:
    """Send one batch of (id, hash, slot, known) rows; returns how many went."""
    manifest = idx.manifest
    doc_ids = [r[0] for r in rows]
    # A long document (its served content a whole of chunks, no slot of its own) is sent as the
    # normalized mean of its chunks, the row `vectors()` gives it.
    vectors = content_vectors(manifest.conn, idx.store, [(r[1], r[2]) for r in rows])
    if not np.isfinite(vectors).all():  # a slot moved by a compact since the snapshot: never send it
        raise IndexerError(f"{idx.path} changed under the push (was `indexer compact` run?); nothing "
                           "wrong was sent. Run the push again")
    manifest.mark_pushing(target_id, doc_ids)
    known = np.array([bool(r[3]) for r in rows])
    for part, send in ((~known, target.insert), (known, target.upsert)):
        if part.any():
            chosen = np.flatnonzero(part)
            send(_arrow_rows([doc_ids[i] for i in chosen], vectors[chosen], idx))
    crash_point("push-after-upsert")
    manifest.mark_pushed(target_id, [(r[0], r[1]) for r in rows])
    return len(rows)


def _arrow_rows(ids: list[str], vectors: np.ndarray, idx: Index) -> object:
    import pyarrow as pa

    schema = vector_schema(idx.store.dim, idx.store.dtype)
    return pa.Table.from_arrays([pa.array(ids, pa.string()), vector_array(vectors)], schema=schema)


def _batches(cursor: sqlite3.Cursor, size: int) -> Iterator[list[Any]]:
    while rows := cursor.fetchmany(size):
        yield rows
