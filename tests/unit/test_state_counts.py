"""The status counts kept in `state_counts` (migrations/0008) and the reader's snapshot join.

- `indexer status` reads the counts the triggers keep; `verify` recounts them from the rows, reports any
  difference as a problem, and `verify --repair` recounts. Every test that asserts a clean verify (the
  state machine after every step, the kill -9 tests after every kill) so checks the counts too; here:
  a tampered count is caught and repaired, and a reader mid-sync sees counts that match its snapshot.
- `vectors()` joins documents to contents in numpy (manifest._reads._served_singles): it gives the rows
  the SQL join gives, in the same order, on an index with shared, changed, deleted and long documents.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection, ScanCounts
from indexer.manifest._hash_join import lookup
from indexer.manifest._reads import _documents
from indexer.settings import Settings
from indexer.sources import Record

from manifest_surgery import Tamper

SETTINGS = Settings(chunk_rows=8, scan_batch=16)


def test_verify_catches_a_count_that_differs_from_the_rows_and_repair_recounts(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    indexer.sync(ix, [(f"d{i}", f"text {i % 7}") for i in range(30)], embedder=FakeEmbedder(16),
                 settings=SETTINGS)
    with Tamper.open(ix) as tamper:
        tamper.skew_state_counts("done", documents=3, chunks=-1)
    with indexer.open(ix, SETTINGS) as idx:
        assert idx.status()["done"] == 33  # status reads the kept counts
        report = idx.verify()
        assert not report.ok
        assert report.problems == [
            "status counts: documents of state done are kept as 33, but the rows hold 30",
            "status counts: chunks of state done are kept as 29, but the rows hold 30"]
        assert "recounted the status counts from the rows" in idx.verify(repair=True).notes
        assert idx.verify().ok
        status = idx.status()
        assert (status["documents"], status["done"], status["chunks"]) == (30, 30, 30)
        assert status["contents"] == {"pending": 0, "claimed": 0, "done": 7, "failed": 0}


def test_a_reader_mid_sync_sees_counts_that_match_its_snapshot(tmp_path: Path) -> None:
    """Read while the sync runs, after every scan batch and committed claim: the counts equal a recount
    of the same snapshot, and every live document is pending (claimed ones included) or done."""
    ix = tmp_path / "ix"
    indexer.sync(ix, [("seed", "seed text")], embedder=FakeEmbedder(16), settings=SETTINGS)
    seen: list[tuple[int, int, int]] = []

    def read(_: object) -> None:
        with indexer.open(ix, SETTINGS) as idx:
            assert idx.manifest.counts_problems() == []
            status = idx.status()
        seen.append((status["documents"], status["pending"], status["done"]))  # type: ignore[arg-type]
        assert status["pending"] + status["done"] == status["documents"]  # type: ignore[operator]

    indexer.sync(ix, [(f"d{i}", f"text {i}") for i in range(100)], embedder=FakeEmbedder(16),
                 settings=SETTINGS, delete_missing=True, max_delete=1.0, on_progress=read)
    assert len(seen) > 10
    assert any(0 < pending < 100 for _, pending, _ in seen)  # some were read in the middle of the embed
    with indexer.open(ix, SETTINGS) as idx:
        status = idx.status()
        assert (status["documents"], status["done"], status["deleted"]) == (100, 100, 1)
        assert idx.verify().ok


def sql_join(conn: sqlite3.Connection) -> tuple[list[str], list[int], list[bytes | None]]:
    rows = _documents(conn, " AND 1 = 1")  # any `where` takes the SQL join
    return rows.ids, rows.slots.tolist(), rows.hashes


def test_the_numpy_join_gives_the_rows_of_the_sql_join(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    long_text = "alpha beta gamma.\n\ndelta epsilon zeta.\n\neta theta iota."
    docs = [(f"d{i:02d}", f"text {i % 9}") for i in range(40)] + [("long", long_text), ("long2", long_text)]
    indexer.sync(ix, docs, embedder=FakeEmbedder(16), settings=SETTINGS, chunk_tokens=4)
    # Deleted documents; changed ones still serving their old vector (their new text not embedded yet).
    indexer.sync(ix, docs[5:], embedder=FakeEmbedder(16), settings=SETTINGS, chunk_tokens=4,
                 delete_missing=True, max_delete=1.0)
    # Scanned, not embedded: they keep serving their done content (as ready_hash).
    with indexer.open(ix, SETTINGS) as idx:
        idx.manifest.scan_batch([Record("d07", "new", "f.jsonl", 1), Record("d30", "new", "f.jsonl", 2)],
                                ScanCounts())
    with Inspection.open(ix) as look, look.snapshot() as conn:
        ids, slots, hashes = sql_join(conn)
        rows = _documents(conn)
    assert (rows.ids, rows.slots.tolist(), rows.hashes) == (ids, slots, hashes)
    assert "d07" in ids and "d30" in ids and "d00" not in ids and "long" in ids
    assert len(ids) == 37 and len(rows.parts) == 6  # 35 short, 2 long of 3 chunks each
    with indexer.open(ix, SETTINGS) as idx:
        assert list(idx.vectors()[0]) == ids


def test_lookup_finds_hashes_that_share_their_high_half() -> None:
    table = np.array([[5, 9], [1, 2], [5, 3], [7, 7]], dtype=np.uint64)
    keys = np.array([[5, 3], [5, 9], [1, 2], [5, 4], [0, 0], [9, 9], [7, 7]], dtype=np.uint64)
    assert lookup(table, keys).tolist() == [2, 0, 1, -1, -1, -1, 3]
    unique = np.array([[4, 1], [2, 8]], dtype=np.uint64)
    assert lookup(unique, keys[[0, 4]]).tolist() == [-1, -1]
    assert lookup(unique, np.array([[2, 8], [2, 7]], dtype=np.uint64)).tolist() == [1, -1]
    assert lookup(table[:0], keys).tolist() == [-1] * len(keys)
