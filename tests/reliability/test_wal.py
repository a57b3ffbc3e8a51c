"""The manifest's disk use (issue 10, item 14): its write-ahead log stays under the configured limit
while a sync commits (plus one transaction), is emptied when the sync ends, and `compact` VACUUMs the
manifest, giving back the pages deleted documents held. Real SQLite files; the fake model."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.settings import Settings

MIB = 2**20


def docs(n: int) -> list[tuple[str, str]]:
    return [(f"doc-{i:06d}", f"document number {i} " + "some words of text " * (1 + i % 9))
            for i in range(n)]


def test_the_wal_stays_under_its_limit_and_is_emptied_after_a_sync(tmp_path: Path) -> None:
    # One claim per transaction (claim_seconds=0), so that "one transaction" is one claim's; groups of
    # claims make bigger transactions (test_with_groups_of_claims_the_wal_stays_under_the_database).
    peak, db = wal_peak(tmp_path / "idx", Settings(chunk_rows=64, scan_batch=200, wal_limit_mib=1,
                                                   claim_seconds=0.0))
    # A checkpoint runs once a transaction takes the log past 1 MiB, so one transaction more may be on
    # top: a scan batch of 200 records dirties pages all over the hash-keyed contents table. Without
    # the limit the log grew past the size of the whole database.
    assert 0 < peak < 3 * MIB, (peak, db)
    assert db > 4 * MIB


def test_with_groups_of_claims_the_wal_stays_under_the_database(tmp_path: Path) -> None:
    """A group of 32 claims of 64 rows commits in one transaction, which may take the log one
    transaction past its limit: still checkpointed, never grown past the database, emptied at the end."""
    peak, db = wal_peak(tmp_path / "idx", Settings(chunk_rows=64, scan_batch=200, wal_limit_mib=1,
                                                   claim_seconds=60.0, claim_chunks_max=32))
    assert 0 < peak < db, (peak, db)
    assert db > 4 * MIB


def wal_peak(index: Path, settings: Settings) -> tuple[int, int]:
    """Sync 20,000 documents into a new index, watching its write-ahead log: (its peak size, the size
    of the database). The log is emptied at the end and the index verifies."""
    wal = index / "manifest.sqlite-wal"
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            with contextlib.suppress(FileNotFoundError):
                peak = max(peak, wal.stat().st_size)
            done.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        summary = indexer.sync(index, docs(20_000), indexer.SyncOptions(settings=settings),
                               embedder=FakeEmbedder(64))
    finally:
        done.set()
        watcher.join()
    assert summary.embedded == 20_000
    db = (index / "manifest.sqlite").stat().st_size
    assert not wal.exists() or wal.stat().st_size == 0  # emptied at the end of the run
    with indexer.open(index) as idx:
        assert idx.verify().ok
    return peak, db


def test_compact_vacuums_the_manifest(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    settings = Settings(chunk_rows=64, scan_batch=2000)
    indexer.sync(index, docs(10_000), indexer.SyncOptions(settings=settings), embedder=FakeEmbedder(16))
    indexer.sync(index, docs(500),
                 indexer.SyncOptions(settings=settings, delete_missing=True, max_delete=1.0),
                 embedder=FakeEmbedder(16))  # most documents go, on purpose: compact then has work
    before = (index / "manifest.sqlite").stat().st_size
    with indexer.open(index, settings) as idx:
        report = idx.compact()
        assert report.contents_dropped == 9_500
        assert idx.verify().ok
    after = (index / "manifest.sqlite").stat().st_size
    assert after < before / 2, (before, after)
    assert report.manifest_bytes_freed == before - after
    wal = index / "manifest.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
