"""An open manifest: its connection (one a process), the PRAGMAs it runs with, its transactions and
checkpoints, and the copy of index.toml it keeps; the schema brought up to date as it opens.

Writers use `BEGIN IMMEDIATE` (a deferred transaction that reads then writes would get SQLITE_BUSY at
once); readers get a consistent snapshot from WAL while a sync runs.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from ..errors import ManifestError
from ..settings import Settings
from ._migrations import migrate, normalize_sql, numbered_migrations, refuse_newer
from ._queries import named_queries

_QUERIES = named_queries("connection.sql")

_PAGE_SIZE = 16384  # bytes, of a manifest made from now on


class ManifestConnection:
    """The connection the manifest's roles (scan, claims, reports, maintenance, push state) share."""

    def __init__(self, path: Path, settings: Settings, *, create: bool = False,
                 read_only: bool = False, config_text: str | None = None) -> None:
        """Open (with `create`, make) the manifest at `path`, migrating it to the current schema.

        `read_only`: no write at all, no migration (for read-only media, or a reader that must not
        change anything); the queries readers use work on every schema version. `config_text` (with
        `create`): the copy of index.toml to keep, written with the schema, in one transaction."""
        self.path = path
        self.settings = settings
        self.read_only = read_only
        if not create and not path.exists():
            raise ManifestError(f"{path} does not exist")
        # Rows the scan's open write transaction holds (None: none); other transactions join it.
        self._scan_txn_rows: int | None = None
        try:
            self.conn = self._connect()
            if read_only:
                self._check_version()
            else:
                # Pages of 16 KiB where this makes the file (a no-op on one that has tables): the
                # contents' hash index takes its rows in random places, and larger pages make that
                # index shallower and a full sync's scan cheaper (bench/RESULTS.md, driver notes).
                self.conn.execute(f"PRAGMA page_size = {_PAGE_SIZE}")
                self.conn.execute("PRAGMA journal_mode = WAL")
                # NORMAL in WAL mode: a crash of the process loses nothing committed; a power cut may
                # lose the last commits, which only returns their contents to pending (their chunks
                # stay).
                self.conn.execute("PRAGMA synchronous = NORMAL")
                self.conn.execute("PRAGMA temp_store = FILE")
                # A checkpointed WAL is reused from its start, but keeps its size on disk unless cut.
                self.conn.execute(f"PRAGMA journal_size_limit = {settings.wal_limit_mib * 2**20}")
                self._wal_pages = settings.wal_limit_mib * 2**20 // int(
                    self.conn.execute("PRAGMA page_size").fetchone()[0])
                if self._wal_pages < 1000:  # SQLite's default checkpoint, kept where the limit allows
                    self.conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_pages}")
                created = migrate(self.conn, path, fresh=create, config_text=config_text)
                if config_text is not None and not created:
                    self.store_config(config_text)
        except sqlite3.DatabaseError as exc:
            raise _database_error(path, exc) from exc

    def _connect(self) -> sqlite3.Connection:
        timeout = self.settings.busy_timeout_ms / 1000
        if not self.read_only:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=timeout, check_same_thread=False)
        else:
            # mode=ro reads beside live writers. Where neither the directory nor the file can be
            # written (read-only media), no writer can exist, and SQLite could not make the shared
            # memory file mode=ro needs for a WAL database: read it as immutable, unless a write-ahead
            # log was left beside it (a copy taken mid-sync), whose commits only mode=ro reads.
            writable = os.access(self.path.parent, os.W_OK) or os.access(self.path, os.W_OK)
            wal = self.path.with_name(self.path.name + "-wal")
            mode = "mode=ro" if writable or (wal.exists() and wal.stat().st_size > 0) else "immutable=1"
            conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?{mode}", uri=True, isolation_level=None,
                                   timeout=timeout, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self.settings.busy_timeout_ms}")
        return conn

    def _check_version(self) -> None:
        applied = ({r[0] for r in self.conn.execute(_QUERIES["applied_migrations"])}
                   if self._has_table("schema_migrations") else set())
        refuse_newer(self.path, applied, numbered_migrations())

    def close(self) -> None:
        self.conn.close()

    def reader(self) -> sqlite3.Connection:
        """A new connection of its own, for a reader's snapshot (`Index.vectors`)."""
        return self._connect()

    def is_blank(self) -> bool:
        """Nothing was ever scanned or claimed into it: a creation that stopped before its end."""
        return bool(self.conn.execute(_QUERIES["is_blank"]).fetchone()[0])

    # -- transactions ---------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        if self._scan_txn_rows is not None:  # within the scan's write transaction: part of it
            yield self.conn
            return
        try:
            # BEGIN inside the try: a KeyboardInterrupt (or a stop signal) landing just after BEGIN
            # returned must roll it back too, or the next transaction on this connection fails with
            # "cannot start a transaction within a transaction".
            self.conn.execute(begin)
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException:
            # A KeyboardInterrupt can land just after COMMIT (or before BEGIN took effect): then there
            # is nothing to roll back, and ROLLBACK would hide the interrupt behind an OperationalError.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction on the main database: takes the write lock at once."""
        return self._transaction("BEGIN IMMEDIATE")

    def _temp_writes(self) -> AbstractContextManager[sqlite3.Connection]:
        """One deferred transaction around writes to the scan's TEMP tables. It takes no lock on the
        main database; without it, executemany in autocommit mode commits (and journals) the temp
        file once per row, which made a no-change resync several times slower (bench/RESULTS.md)."""
        return self._transaction("BEGIN")

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN")
            yield self.conn
        finally:
            if self.conn.in_transaction:  # (an interrupt may land before BEGIN took effect)
                self.conn.execute("COMMIT")

    def schema(self) -> list[tuple[str, str, str]]:
        """(type, name, normalized sql) of every schema object, for comparing two manifests."""
        rows = self.conn.execute(_QUERIES["schema_objects"])
        return [(t, n, normalize_sql(s)) for t, n, s in rows]

    def checkpoint(self) -> None:
        """Copy the WAL into the database and empty it, if no reader needs it now (never waits for
        one: a reader's snapshot may be held for long; the next writer's checkpoint will do)."""
        self.conn.execute("PRAGMA busy_timeout = 0")
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass  # busy: another writer is at work
        finally:
            self.conn.execute(f"PRAGMA busy_timeout = {self.settings.busy_timeout_ms}")

    def vacuum(self) -> None:
        """Rewrite the manifest without its free pages (compact), then empty the WAL."""
        self.conn.execute("VACUUM")
        self.checkpoint()

    def _has_table(self, name: str) -> bool:
        """False for a table of a later migration that a read-only manifest has not had applied."""
        return self.conn.execute(_QUERIES["has_table"], (name,)).fetchone() is not None

    def _grow_page_cache(self) -> None:
        """The page cache of a connection that writes rows all over the file: claims and commits, a
        scan that adds documents. A scan that only reads (a resync with no change) keeps the default,
        and its memory flat."""
        self.conn.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB, allocated as pages are read

    def stored_config(self) -> str | None:
        """The text of index.toml kept in the manifest, if any."""
        if not self._has_table("config"):
            return None
        row = self.conn.execute(_QUERIES["stored_config"]).fetchone()
        return None if row is None else str(row[0])

    def store_config(self, text: str) -> None:
        """Keep a copy of index.toml (at creation; for an older index, the first time a writer opens it)."""
        with self._write() as conn:
            conn.execute(_QUERIES["store_config"], (text,))


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> ManifestError:
    """A message that fits the failure: a file that cannot be opened or written (permissions, a
    read-only disk, a lock) is not a damaged one, and destroying it would be the wrong advice."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and any(
            word in text for word in ("unable to open", "readonly", "read-only", "locked", "disk I/O")):
        return ManifestError(f"cannot open {path} ({text}); check that this user may read (and, to "
                             "change the index, write) it and its directory, or wait for the process "
                             "holding it. Nothing was changed")
    return ManifestError(f"{path} is not a readable manifest ({text}): it is damaged, or not indexer's. "
                         "Nothing was changed; keep a copy of it, and restore it from a backup")
