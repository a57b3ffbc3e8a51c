"""Test seams: writes that put a manifest in a state that only a stalled worker, damage, an older or a
newer indexer leaves, so that tests can make one without knowing its tables. No code of the indexer
calls them; their statements are in sql/tamper.sql.

`Tamper.open(path)` opens a connection of its own (a manifest file, or an index directory holding
one); `Tamper(conn)` writes through one already open (a Manifest's, between its transactions).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ._queries import named_queries

_QUERIES = named_queries("tamper.sql")


class Tamper:
    """Each write commits at once (`conn` in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[Tamper]:
        manifest = path / "manifest.sqlite" if path.is_dir() else path
        conn = sqlite3.connect(f"{manifest.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
        try:
            yield cls(conn)
        finally:
            conn.close()

    def set_claim_expiry(self, claim_id: int, expires_at: float) -> None:
        """Move a claim's lease: 0 has it run out (as if its worker stalled past lease_seconds)."""
        self.conn.execute(_QUERIES["set_claim_expiry"], (expires_at, claim_id))

    def forget_checksums(self) -> None:
        """No chunk checksum kept, as in an index written before they were."""
        self.conn.execute(_QUERIES["forget_checksums"])

    def forget_config(self) -> None:
        """No copy of index.toml kept, as in an index made before it was."""
        self.conn.execute(_QUERIES["forget_config"])

    def skew_state_counts(self, state: str, documents: int, chunks: int) -> None:
        """Add to the documents and chunks kept for `state`, so that they differ from the rows."""
        self.conn.execute(_QUERIES["skew_state_counts"], (documents, chunks, state))

    def unfinish_content(self, content: bytes) -> None:
        """Mark a done content pending, its slot forgotten, and nothing else changed."""
        self.conn.execute(_QUERIES["unfinish_content"], (content,))

    def misnumber_document(self, doc_id: str) -> None:
        """Point a document at the content numbered one past its own (documents.seq)."""
        self.conn.execute(_QUERIES["misnumber_document"], (doc_id,))

    def record_future_migration(self, version: int) -> None:
        """A ledger row of a migration this indexer does not know, as a newer indexer leaves one."""
        self.conn.execute(_QUERIES["record_future_migration"], (version,))
