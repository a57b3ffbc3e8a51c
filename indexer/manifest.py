"""The manifest: one SQLite file that knows every document's state. Hashes, slots and states; never vectors.

Writers use `BEGIN IMMEDIATE` (a deferred transaction that reads then writes would get SQLITE_BUSY at
once); readers get a consistent snapshot from WAL while a sync runs. Open a Manifest in the process that
uses it: a connection is never shared across processes.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, cast

import orjson
import xxhash

from . import _counts, _staging, _wholes
from ._faults import crash_point
from ._owner import current_owner, owner_is_dead
from ._scan_input import ScanInput, scan_input
from ._sql import OWN_DONE, SERVED_HASH, in_batches
from ._staging import contents_of, free_claimed, stage_texts
from .errors import LeaseLostError, ManifestError
from .settings import Settings
from .sources import Record, Skip

if TYPE_CHECKING:
    from .chunking import Chunker

__all__ = ["APPLICATION_ID", "Claim", "Finished", "Manifest", "ScanCounts", "ScanInput", "content_hash",
           "identify", "migrations_dir", "scan_input"]


def content_hash(text: str) -> bytes:
    """XXH3-128 of the UTF-8 text: the identity of a content."""
    return xxhash.xxh3_128_digest(text.encode("utf-8"))


def migrations_dir() -> Path:
    packaged = resources.files("indexer") / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "migrations"  # a source checkout


def _numbered_migrations() -> list[tuple[int, str, str]]:
    out = []
    for path in sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql")):
        out.append((int(path.name[:4]), path.stem, path.read_text(encoding="utf-8")))
    return out


@dataclass(frozen=True)
class Claim:
    id: int
    token: str
    chunk: int
    hashes: list[bytes]
    texts: list[str]
    seqs: list[int] = field(default_factory=list)  # the staged rows of the texts, ascending


@dataclass(frozen=True)
class Finished:
    """A claim whose chunk is written: its (hash, slot) pairs done, (hash, reason) failed attempts, and
    the chunk's checksums (None when nothing was written), ready for `Manifest.commit_many`."""

    claim: Claim
    done: list[tuple[bytes, int]]
    failed: list[tuple[bytes, str]]
    checksum: bytes | None


@dataclass
class ScanCounts:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    duplicates: int = 0
    to_embed: int = 0  # distinct contents that became pending (chunks of long documents)
    chunks: int = 0  # chunks of the new and changed documents (1 for a document that fits)
    truncated: int = 0  # new and changed documents cut at the model's window (an unchunked index)
    repeated: int = 0  # skips an earlier scan reported already (same place, same reason): not warned
    warnings: list[str] = field(default_factory=list)
    # Skips with a group (Skip.group, e.g. binary files): group -> [count, first place], one warning each.
    grouped: dict[str, tuple[int, str]] = field(default_factory=dict)

    def summary_warnings(self) -> list[str]:
        """One line for each group of skips and one for the skips reported by an earlier sync."""
        out = [f"skipped {n} {group}(s), e.g. {first}; leave them out with --exclude to silence this"
               for group, (n, first) in self.grouped.items()]
        if self.repeated:
            out.append(f"{self.repeated} more skipped record(s) were reported by an earlier sync and are "
                       "not repeated (a record is reported again when its place or reason changes)")
        return out


# A claim's texts as one row: the free staged rows, first ones first, as comma-separated numbers,
# hex hashes end to end, comma-separated byte lengths and the UTF-8 texts end to end.
_FREE_TEXTS = """SELECT group_concat(seq), group_concat(hex(hash), ''),
    group_concat(length(CAST(text AS BLOB))), CAST(group_concat(text, '') AS BLOB)
    FROM (SELECT seq, hash, text FROM staged WHERE claim_id IS NULL ORDER BY seq LIMIT ?)"""
_PAGE_SIZE = 16384  # bytes, of a manifest made from now on
_NO_CONTENT = b"0" * 20  # an item's content number where the scan's upsert leaves its document alone
# The current batch's records, from the parameters :ids (a JSON array) and :hashes (16 bytes each).
_ITEMS = """WITH items (key, id, hash) AS (
    SELECT key, value, substr(:hashes, key * 16 + 1, 16) FROM json_each(:ids) WHERE value IS NOT NULL
    UNION ALL SELECT key, id, substr(:hashes, key * 16 + 1, 16) FROM scan_odd) """

# A claim's rows done: their staged texts go (the rows it still holds, from its first to its last: its
# rows not done were freed before), their contents are done with their slots. One statement each for
# all the rows, not one a row (a statement on a table with a trigger and unique indexes opens
# and closes a statement journal each time it runs), given as flat arrays indexed by slot - :first:
# the contents' numbers (null where the row failed) and their hashes end to end (zeros there): a
# JSON array of pairs would cost a parse of each pair. "+contents.hash": each row is found by its
# number, its hash checked.
_DONE_CONTENTS = (
    "DELETE FROM staged WHERE seq BETWEEN :lo AND :hi AND claim_id = :claim",
    """UPDATE contents SET state = 'done', slot = :first + j.key, error = NULL
    FROM json_each(:seqs) j WHERE contents.seq = j.value
    AND +contents.hash = substr(:hashes, j.key * 16 + 1, 16)""")

# Documents whose content number (documents.seq, migrations/0010) is not that of the content with their
# hash: none, unless the file was changed by hand. A deleted document may have none: compact dropped
# its content (and a later scan may have added that text again, for another document).
_MISNUMBERED = """WHERE d.seq IS NOT (SELECT c.seq FROM contents c WHERE c.hash = d.hash)
    AND (d.deleted = 0 OR d.seq IS NOT NULL)"""

_LEDGER = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"""


APPLICATION_ID = 0x49445852  # "IDXR" in the SQLite header (migration 0004): this file is a manifest
_OUR_TABLES = {"contents", "documents", "meta", "schema_migrations"}


def identify(path: Path) -> tuple[str, str]:
    """What `path` is, without writing to it: ("absent" | "unfinished" | "ours" | "foreign", why).

    "ours": an indexer manifest (our application_id, or, before 0004 set it, our tables and ledger).
    "unfinished": nothing in it yet (empty, or the ledger alone: a creation killed before its schema).
    "foreign": anything else; it must never be written to.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except FileNotFoundError:
        return "absent", "it does not exist"
    except OSError as exc:
        raise ManifestError(f"cannot read {path} ({exc.strerror or exc}); check its permissions. Nothing "
                            "was changed") from exc
    if not header:
        return "unfinished", "it is empty"
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return "foreign", "it is not an SQLite database"
    app_id = int.from_bytes(header[68:72], "big")
    if app_id == APPLICATION_ID:
        return "ours", "its application_id says so"
    if app_id != 0:
        return "foreign", f"its SQLite application_id is {app_id:#x}, not indexer's"
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            ledger = (conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
                      if "schema_migrations" in tables else 0)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if _rolls_back_to_empty(path):
            return "unfinished", "a creation stopped while it set the empty file up"
        return "foreign", f"it cannot be read as an SQLite database ({exc})"
    if tables <= {"schema_migrations"} and not ledger:
        return "unfinished", "it holds no schema yet"
    if tables >= _OUR_TABLES and ledger:
        return "ours", "it holds indexer's tables"
    return "foreign", f"it holds other tables ({', '.join(sorted(tables)[:5])})"


_JOURNAL_MAGIC = bytes.fromhex("d9d505f920a163d7")  # the first bytes of a rollback journal


def _rolls_back_to_empty(path: Path) -> bool:
    """A hot rollback journal beside `path` says the file was empty before the transaction it interrupted:
    a creation killed while it switched the new file to WAL. A read-only connection cannot roll that
    back ("attempt to write a readonly database"); a writer's first read does, to an empty file."""
    try:
        with open(path.with_name(path.name + "-journal"), "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    # The journal header: 8 bytes of magic, the record count, a nonce, then the database's size in
    # pages before the transaction (https://www.sqlite.org/fileformat2.html#the_rollback_journal).
    return len(header) == 20 and header[:8] == _JOURNAL_MAGIC and header[16:20] == bytes(4)

# A pending content (contents c) whose text is not staged: re-queued by `verify --repair`, it waits for
# a scan that reads its text again.
_LOST_TEXT = """WHERE c.state = 'pending' AND c.parts = 0
    AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.seq = c.seq)"""


class Manifest:
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
                self._migrate(fresh=create, config_text=config_text)
        except sqlite3.DatabaseError as exc:
            raise _database_error(path, exc) from exc
        self._scan_tables_ready = False
        self._scan_grouped = False  # within `scanning`: batches share write transactions
        self._scan_mid_batch = False  # a scan_batch began and did not return
        self._scan_txn_rows: int | None = None  # rows the scan's open write transaction holds; None: none
        self._scan_written = 0  # rows the scan's earlier transactions committed
        # The data_version at which the documents were the scan's own only (None: not so), read in
        # its write transactions: another connection's commit changes it.
        self._scan_alone_at: int | None = None

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
        known = {v for v, _, _ in _numbered_migrations()}
        applied = ({r[0] for r in self.conn.execute("SELECT version FROM schema_migrations")}
                   if self._has_table("schema_migrations") else set())
        if applied - known:
            raise ManifestError(f"{self.path} was written by a newer indexer (schema version "
                                f"{max(applied)}); upgrade indexer to open it")

    def close(self) -> None:
        self.conn.close()

    def reader(self) -> sqlite3.Connection:
        """A new connection of its own, for a reader's snapshot (`Index.vectors`)."""
        return self._connect()

    def is_blank(self) -> bool:
        """Nothing was ever scanned or claimed into it: a creation that stopped before its end."""
        return bool(self.conn.execute("""SELECT NOT EXISTS (SELECT 1 FROM documents)
            AND NOT EXISTS (SELECT 1 FROM contents)
            AND (SELECT value FROM meta WHERE key = 'next_chunk') = 0""").fetchone()[0])

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

    # -- migrations -----------------------------------------------------------------------------

    def _migrate(self, fresh: bool, config_text: str | None = None) -> None:
        self.conn.execute(_LEDGER)
        applied = {row[0] for row in self.conn.execute("SELECT version FROM schema_migrations")}
        migrations = _numbered_migrations()
        known = {v for v, _, _ in migrations}
        if applied - known:
            raise ManifestError(f"{self.path} was written by a newer indexer (schema version "
                                f"{max(applied)}); upgrade indexer to open it")
        if fresh and not applied:
            schema = (migrations_dir() / "schema.sql").read_text(encoding="utf-8")
            ledger = "".join(f"INSERT INTO schema_migrations VALUES ({v}, '{n}', {time.time()});\n"
                             for v, n, _ in migrations)
            if config_text is not None:
                quoted = config_text.replace("'", "''")
                ledger += f"INSERT INTO config VALUES ('index.toml', '{quoted}');\n"
            self._run_script(schema + ledger)
            return
        for version, name, sql in migrations:
            if version not in applied:
                # The ledger row first: if another process applied this migration while we waited for
                # the write lock, the row's primary key stops us before any of the script runs.
                try:
                    self._run_script(f"INSERT INTO schema_migrations VALUES ({version}, '{name}', "
                                     f"{time.time()});\n" + sql)
                except sqlite3.IntegrityError:
                    if self.conn.execute("SELECT 1 FROM schema_migrations WHERE version = ?",
                                         (version,)).fetchone() is None:
                        raise
        if config_text is not None:
            self.store_config(config_text)

    def _run_script(self, sql: str) -> None:
        """Run a migration script and its ledger row in one transaction."""
        try:
            self.conn.executescript("BEGIN IMMEDIATE;\n" + sql)
            crash_point("mid-migration")
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def schema(self) -> list[tuple[str, str, str]]:
        """(type, name, normalized sql) of every schema object, for comparing two manifests."""
        rows = self.conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name")
        return [(t, n, _normalize_sql(s)) for t, n, s in rows]

    # -- scan -----------------------------------------------------------------------------------

    def _ensure_scan_tables(self) -> None:
        if self._scan_tables_ready:
            return
        # Item k of a batch is scanned as ordinal `first + k`. scan_seen keeps the ordinal of each id's
        # first sighting, scan_wheres each batch's places (line numbers where a source has them), so
        # that a "file:line" text is made only for a warning.
        self.conn.executescript("""
            CREATE TEMP TABLE IF NOT EXISTS scan_seen (id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL)
                WITHOUT ROWID;
            CREATE TEMP TABLE IF NOT EXISTS scan_wheres (first INTEGER PRIMARY KEY, at TEXT,
                places TEXT NOT NULL);
            CREATE TEMP TABLE IF NOT EXISTS scan_odd (key INTEGER PRIMARY KEY, id TEXT NOT NULL);
            CREATE TEMP TABLE IF NOT EXISTS scan_new_hashes (hash BLOB PRIMARY KEY) WITHOUT ROWID;
            CREATE TEMP TABLE IF NOT EXISTS scan_skips (place TEXT PRIMARY KEY, reason TEXT NOT NULL)
                WITHOUT ROWID;
            DELETE FROM scan_seen; DELETE FROM scan_wheres; DELETE FROM scan_new_hashes;
            DELETE FROM scan_skips;
        """)
        self._known_skips = self.conn.execute("SELECT 1 FROM skips LIMIT 1").fetchone() is not None
        self._scan_next = 0
        self._scan_odd = True
        # Contents re-queued by `verify --repair` lost their staged text; this scan must stage it again.
        self._restage_texts = self.conn.execute(f"""SELECT 1 FROM contents c {_LOST_TEXT}
                                                   LIMIT 1""").fetchone() is not None
        self._scan_tables_ready = True

    def begin_scan(self) -> None:
        """Start a scan: forget the ids seen by an earlier scan on this connection."""
        self._scan_tables_ready = False
        self._scan_written, self._scan_alone_at = 0, None
        self._ensure_scan_tables()

    def _seen_where(self, ordinal: int) -> str:
        at, place = self.conn.execute("""SELECT at, places ->> (?1 - first) FROM scan_wheres
            WHERE first <= ?1 ORDER BY first DESC LIMIT 1""", (ordinal,)).fetchone()
        return f"{at}:{place}" if isinstance(place, int) else str(place)

    def scan_batch(self, items: Sequence[Record | Skip] | ScanInput, counts: ScanCounts, *,
                   dry_run: bool = False, max_warnings: int = 1000, chunker: Chunker | None = None,
                   split: bool = True) -> None:
        """Upsert one batch of source records: new id -> pending, same hash -> untouched,
        changed hash -> pending (the old vector stays served until the new one is done).

        `items` may come as `scan_input(items)`, made beforehand (in the thread that read them).
        With a `chunker`, a new text longer than its budget is stored as a whole of chunks
        (`split`), or marked truncated (`split=False`: an unchunked index counts what it cuts)."""
        self._scan_mid_batch = True  # (left set by an exception: `scanning` rolls back)
        self._scan_batch(items if isinstance(items, ScanInput) else scan_input(items), counts, dry_run,
                         max_warnings, chunker, split)
        self._scan_mid_batch = False

    def _scan_batch(self, batch: ScanInput, counts: ScanCounts, dry_run: bool,
                    max_warnings: int, chunker: Chunker | None, split: bool) -> None:
        self._ensure_scan_tables()
        items = batch.items
        if not items:
            return
        first = self._scan_next
        self._scan_next += len(items)
        # The batch goes to SQLite as a JSON array of ids (None where item k is no record to scan) and
        # the 16-byte hashes end to end: a few statements a batch, none a row.
        ids, hashes, odd = batch.ids, batch.hashes, batch.odd
        scanned = dict(batch.first_of)  # id -> k of its record
        seen_only: list[tuple[str, int]] = []  # skipped records with an id: present, so not missing
        skips: list[tuple[str, str]] = []

        def warn(where: str, reason: str, always: bool = False) -> None:
            counts.skipped += 1
            key = (_printable(where), _printable(reason))  # an undecodable file name's surrogates
            skips.append(key)
            # A cut source is told every time: it holds back --delete-missing on every sync.
            if not always and self._known_skips and self.conn.execute(
                    "SELECT 1 FROM skips WHERE place = ? AND reason = ?", key).fetchone():
                counts.repeated += 1
            elif len(counts.warnings) < max_warnings:
                counts.warnings.append(f"{where}: skipped: {reason}")

        for k in batch.not_scanned:
            item = items[k]
            if isinstance(item, Skip):
                if item.group is not None:
                    counts.skipped += 1
                    n, first_place = counts.grouped.get(item.group, (0, item.where))
                    counts.grouped[item.group] = (n + 1, first_place)
                else:
                    warn(item.where, item.reason, always=item.cut)
                if item.id is not None:
                    seen_only.append((item.id, first + k))
                continue
            counts.duplicates += 1
            warn(item.where, f"duplicate id {item.id!r}, first seen at {items[scanned[item.id]].where}; "
                 "the first is kept")
        at, places = batch.at, batch.places
        params = {"ids": orjson.dumps(ids), "hashes": b"".join(hashes), "first": first}
        conn = self.conn
        # The scan's temp tables are written outside the main write lock; the main tables inside it.
        with self._temp_writes():
            conn.execute("INSERT INTO scan_wheres VALUES (?, ?, ?)", (first, at and _printable(at),
                                                                     _places_json(places)))
            if odd or self._scan_odd:  # each statement costs a hand-over of the GIL to the reader thread
                conn.execute("DELETE FROM scan_odd")
                conn.executemany("INSERT INTO scan_odd VALUES (?, ?)", odd)
                self._scan_odd = bool(odd)
            # In id order, a batch walks each B-tree once instead of jumping about: much faster when the
            # ids come in random order (bench/RESULTS.md, notes on profiles).
            before = conn.total_changes  # (rowcount is -1 for a statement that starts with WITH)
            conn.execute(_ITEMS + """INSERT INTO scan_seen SELECT id, :first + key FROM items
                WHERE true ORDER BY id ON CONFLICT DO NOTHING""", params)
            if conn.total_changes - before < len(scanned):  # ids seen in an earlier batch
                ids = list(ids)
                for k, seen_at in conn.execute(_ITEMS + """SELECT i.key, s.seen_at FROM items i
                        JOIN scan_seen s USING (id) WHERE s.seen_at != :first + i.key ORDER BY i.key""",
                        params).fetchall():
                    item = items[k]
                    counts.duplicates += 1
                    warn(item.where, f"duplicate id {item.id!r}, first seen at {self._seen_where(seen_at)}; "
                         "the first is kept")
                    conn.execute("DELETE FROM scan_odd WHERE key = ?", (k,))
                    del scanned[item.id]
                    ids[k] = None
                params["ids"] = orjson.dumps(ids)
            if seen_only:
                conn.executemany("INSERT OR IGNORE INTO scan_seen VALUES (?, ?)", seen_only)
            if skips:
                conn.executemany("INSERT OR REPLACE INTO scan_skips VALUES (?, ?)", skips)
        counts.scanned += len(scanned)

        # Read in the scan's open write transaction (the batch before left it open), the documents
        # found are all that exist: another writer cannot add one before this batch's upsert.
        locked = self._scan_txn_rows is not None
        if locked and self._scan_alone_at is not None:
            # The documents are those of the scan's earlier batches, whose ids are not this batch's
            # (scan_seen): every id here is new (a first sync), and none needs to be looked up.
            codes = [k * 4 + 2 for _, k in sorted(scanned.items())]
        else:
            # The new and changed documents as one row (a row each would hand the GIL over each time):
            # 4 x key + 2 x (new: none or deleted) + (has a row).
            joined = conn.execute(_ITEMS + """SELECT group_concat(i.key * 4 + 2 * (d.hash IS NULL OR
                d.deleted) + (d.hash IS NOT NULL)) FROM (SELECT * FROM items ORDER BY id) i
                LEFT JOIN documents d USING (id) WHERE d.hash IS NULL OR d.hash != i.hash OR d.deleted""",
                                  params).fetchone()[0]
            codes = [int(code) for code in joined.split(",")] if joined else []
        todo = [code >> 2 for code in codes]
        n_new = sum(code >> 1 & 1 for code in codes)
        counts.new += n_new
        counts.changed += len(todo) - n_new
        counts.unchanged += len(scanned) - len(todo)
        records = cast(Sequence[Record], items)  # the keys in todo and lost are of records
        if self._restage_texts and not dry_run:
            # A content re-queued by `verify --repair` lost its staged text when it was first done; a
            # scan that sees the text again stages it, so that the next claim can embed it.
            lost = conn.execute(_ITEMS + f"""SELECT i.key FROM items i JOIN contents c ON c.hash = i.hash
                                {_LOST_TEXT}""", params).fetchall()
            lost_parts = _wholes.lost_part_texts(conn, _ITEMS, params, records, chunker)
            if lost or lost_parts:
                with self._scan_writes():
                    texts = [(hashes[k], len(records[k].text), records[k].text, 0) for (k,) in lost]
                    stage_texts(conn, texts + lost_parts)
        if not todo:
            return
        staged = _wholes.stage(conn, [(hashes[k], records[k].text) for k in todo], chunker, split)
        counts.chunks += staged.chunks
        counts.truncated += staged.truncated
        if dry_run:  # the new contents are not written: the ones seen are kept apart, to count once
            with self._temp_writes():
                conn.executemany("""INSERT OR IGNORE INTO scan_new_hashes SELECT ?1
                                    WHERE NOT EXISTS (SELECT 1 FROM contents WHERE hash = ?1)""",
                                 sorted((h,) for h, _, _, _ in staged.contents))
            counts.to_embed = conn.execute("SELECT count(*) FROM scan_new_hashes").fetchone()[0]
            return
        with self._scan_writes():
            added, found = staged.write(conn)
            counts.to_embed += added
            known = [code >> 2 for code in codes if code & 1 or not locked]  # (none in a first sync)
            if known:
                _counts.batch_leaves(conn, _ITEMS, {**params, "todo": orjson.dumps(known)})
            # Their contents as staging found or made them, the others (long documents, texts known
            # before) looked up.
            found.update(contents_of(conn, list({hashes[k] for k in todo} - found.keys())))
            # Item k's content: 2 x its number + (done), as 20 digits at 20 k (zeros: not upserted).
            contents = [_NO_CONTENT] * len(items)
            for k in todo:
                seq, state = found[hashes[k]][:2]
                contents[k] = b"%020d" % (2 * seq + (state == "done"))
            # In id order: a batch's documents land on neighbouring pages. A changed document keeps
            # what it served (d: the row as it was) until its new content is done.
            conn.execute(_ITEMS + f"""INSERT INTO documents AS d (id, hash, seq, ready_hash)
                SELECT id, hash, content >> 1, iif(content & 1, hash, NULL) FROM (SELECT i.id, i.hash,
                    CAST(substr(:contents, i.key * 20 + 1, 20) AS INTEGER) AS content FROM items i)
                WHERE content > 0 ORDER BY id
                ON CONFLICT (id) DO UPDATE SET hash = excluded.hash, seq = excluded.seq, deleted = 0,
                    ready_hash = coalesce(excluded.ready_hash, {SERVED_HASH})""",
                         {**params, "contents": b"".join(contents)})
            _counts.batch_enters(conn, (found[hashes[k]] for k in todo))
        self._scan_grew(len(todo))
        crash_point("mid-scan")

    @contextmanager
    def scanning(self) -> Iterator[None]:
        """A scan (`begin_scan`, then `scan_batch` for each batch) whose batches share write
        transactions: one is committed once it holds as many rows as the scan committed before (at
        least `Settings.scan_batch`, at most 8 times that), and the last when the block ends, or when
        an exception stops it between two batches (a source that broke off: what was read before is
        kept); an exception inside a batch rolls the open one back. New rows land on pages all over
        the hash-keyed tables, and each commit writes every page it changed to the log: the fewer the
        commits, the fewer times a page is written. A page cache as large as the embed phase's keeps
        those pages between batches. A kill loses the scan work of the open transaction, which the
        next sync redoes."""
        self.begin_scan()
        self._scan_grouped, self._scan_mid_batch = True, False
        try:
            yield
        finally:
            self._scan_grouped = False
            self._end_scan_transaction(commit=not self._scan_mid_batch)

    def _scan_writes(self) -> AbstractContextManager[sqlite3.Connection]:
        """A scan batch's writes to the main tables: in the open transaction of `scanning`, or one
        of their own."""
        if not self._scan_grouped:
            return self._write()
        if self._scan_txn_rows is None:
            if not self._scan_written:
                self._grow_page_cache()
            self._scan_txn_rows = 0  # first: a stop signal just after BEGIN must find it to roll back
            self.conn.execute("BEGIN IMMEDIATE")
            self._scan_alone_at = self._documents_only_this_scans()
        return contextlib.nullcontext(self.conn)

    def _documents_only_this_scans(self) -> int | None:
        """In the scan's write transaction: the data_version, if the documents are those the scan
        wrote (none before its first commit), else None."""
        version: int = self.conn.execute("PRAGMA data_version").fetchone()[0]
        if self._scan_written:
            return version if version == self._scan_alone_at else None
        empty = self.conn.execute("SELECT NOT EXISTS (SELECT 1 FROM documents)").fetchone()[0]
        return version if empty else None

    def _scan_grew(self, rows: int) -> None:
        if self._scan_txn_rows is None:
            return
        self._scan_txn_rows += rows
        batch = self.settings.scan_batch
        if self._scan_txn_rows >= min(8 * batch, max(batch, self._scan_written)):
            self._end_scan_transaction(commit=True)

    def _end_scan_transaction(self, *, commit: bool) -> None:
        rows, self._scan_txn_rows = self._scan_txn_rows, None
        try:
            if not self.conn.in_transaction:  # (a stop signal may land before BEGIN took effect)
                return
            if commit and rows is not None:
                self.conn.execute("COMMIT")
                self._scan_written += rows
            else:
                self.conn.execute("ROLLBACK")
        except BaseException:  # a stop signal here must not leave the transaction open
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def missing_ids_count(self) -> int:
        """Live documents the scan that just ran did not see."""
        self._ensure_scan_tables()
        row = self.conn.execute("""SELECT count(*) FROM documents
            WHERE deleted = 0 AND id NOT IN (SELECT id FROM scan_seen)""").fetchone()
        return int(row[0])

    def remember_skips(self) -> None:
        """Keep the skips of the scan that just ran (read to its end) for the next one to compare."""
        self._ensure_scan_tables()
        with self._write() as conn:
            conn.execute("DELETE FROM skips")
            conn.execute("INSERT INTO skips SELECT place, reason FROM scan_skips")

    def live_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM documents WHERE deleted = 0").fetchone()[0])

    def missing_ids(self, limit: int) -> list[str]:
        """Up to `limit` ids (in id order) of live documents the scan that just ran did not see."""
        self._ensure_scan_tables()
        return [r[0] for r in self.conn.execute("""SELECT id FROM documents
            WHERE deleted = 0 AND id NOT IN (SELECT id FROM scan_seen) ORDER BY id LIMIT ?""", (limit,))]

    def delete_missing(self) -> int:
        """Mark deleted every live document the scan that just ran did not see."""
        self._ensure_scan_tables()
        missing = "WHERE d.deleted = 0 AND d.id NOT IN (SELECT id FROM scan_seen)"
        with self._write() as conn:
            _counts.add_documents(conn, _counts.documents_by_state(
                conn, f"FROM documents d JOIN contents c ON c.hash = d.hash {missing}"), sign=-1)
            deleted = conn.execute(f"UPDATE documents AS d SET deleted = 1 {missing}").rowcount
            _counts.add(conn, "deleted", documents=deleted)
            return int(deleted)

    # -- claims ---------------------------------------------------------------------------------

    def _expire_claims(self, conn: sqlite3.Connection, now: float) -> int:
        active = conn.execute("SELECT id, owner, expires_at FROM claims WHERE state = 'active'").fetchall()
        me = current_owner()
        # This process is alive: asking the OS about each of its own claims cost one call per claim in
        # flight, on every claim.
        dead = [cid for cid, owner, expires in active
                if expires < now or (owner != me and owner_is_dead(owner))]
        for cid in dead:
            conn.execute("UPDATE claims SET state = 'expired' WHERE id = ?", (cid,))
            free_claimed(conn, cid)
        return len(dead)

    def expire_claims(self) -> int:
        """Return expired claims and claims of dead local owners to pending; how many were active."""
        with self._write() as conn:
            self._expire_claims(conn, time.time())
            return int(conn.execute("SELECT count(*) FROM claims WHERE state = 'active'").fetchone()[0])

    def prepare_for_claims(self) -> None:
        """Tune this connection for a run of claims and commits, whose commits rewrite documents
        spread over the whole file (keyed by id, found by their content's hash).
        A larger page cache keeps those pages between claims; a rarer checkpoint writes a page that
        many commits changed back to the database once (and fsyncs once). The price: a WAL of up to
        `Settings.wal_limit_mib` on disk while the sync runs (it ends emptied: `finish_run`), and a
        power cut (not a crash) may return more of the last commits to pending."""
        self._grow_page_cache()
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_pages}")

    def _grow_page_cache(self) -> None:
        """The page cache of a connection that writes rows all over the file: claims and commits, a
        scan that adds documents. A scan that only reads (a resync with no change) keeps the default,
        and its memory flat."""
        self.conn.execute("PRAGMA cache_size = -65536")  # KiB: 64 MiB, allocated as pages are read

    def claim(self, limit: int, owner: str | None = None, on_chunk: object = None) -> Claim | None:
        """Lease up to `limit` pending contents of similar length and give them one fresh chunk.

        `on_chunk(chunk)` runs inside the write transaction: the store grows its shape there, so that
        two processes never rewrite the array's metadata at once.
        """
        claims = self.claim_many(limit, 1, owner, on_chunk)
        return claims[0] if claims else None

    def claim_many(self, limit: int, count: int, owner: str | None = None,
                   on_chunk: object = None) -> list[Claim]:
        """Up to `count` claims of up to `limit` contents each (each its own fresh chunk, lease and
        token), in one transaction: the first free staged texts, consecutive in claim order. One
        transaction for many claims writes each page they share to the log once.

        `on_chunk(last chunk)` runs inside the write transaction (see `claim`)."""
        now = time.time()
        claims: list[Claim] = []
        try:
            with self._write() as conn:
                self._expire_claims(conn, now)
                seqs, hashes, texts = self._free_texts(conn, limit * count)
                if not seqs:
                    return []
                starts = range(0, len(seqs), limit)
                first = conn.execute("UPDATE meta SET value = value + ? WHERE key = 'next_chunk' "
                                     "RETURNING value - ?", (len(starts), len(starts))).fetchone()[0]
                owner = owner or current_owner()
                for n, i in enumerate(starts):
                    token = secrets.token_hex(16)
                    part = slice(i, i + limit)
                    lo, hi = seqs[i], seqs[part][-1]
                    cid = conn.execute(
                        "INSERT INTO claims (token, owner, chunk, expires_at, state, first_seq, last_seq) "
                        "VALUES (?, ?, ?, ?, 'active', ?, ?)",
                        (token, owner, first + n, now + self.settings.lease_seconds, lo, hi)).lastrowid
                    assert cid is not None
                    # The free rows from lo to hi are this part's: the first free ones, in order.
                    conn.execute("UPDATE staged SET claim_id = ? WHERE seq BETWEEN ? AND ? "
                                 "AND claim_id IS NULL", (cid, lo, hi))
                    claims.append(Claim(cid, token, first + n, hashes[part], texts[part], seqs[part]))
                if callable(on_chunk):
                    on_chunk(first + len(starts) - 1)
        except BaseException:
            # Ctrl-C can land just after COMMIT, before the caller ever sees the claims: give them back
            # (a no-op when the transaction was rolled back instead).
            if claims and not self.conn.in_transaction:
                for claim in claims:
                    with contextlib.suppress(Exception):
                        self.release(claim)
            raise
        return claims

    def _free_texts(self, conn: sqlite3.Connection, limit: int
                    ) -> tuple[list[int], list[bytes], list[str]]:
        """Up to `limit` free staged texts, in claim order: their numbers, hashes and texts, what a
        claim reads."""
        # One row of whole columns: a row a text would hand the GIL over twice per text, and the chunk
        # writer threads, running meanwhile, take it each time. Lengths in bytes: length() of a text
        # stops at a NUL, a byte a text may hold.
        seqs, hashes, sizes, joined = conn.execute(_FREE_TEXTS, (limit,)).fetchone()
        if seqs is None:
            return [], [], []
        numbers = [int(seq) for seq in seqs.split(",")]
        digests = bytes.fromhex(hashes)
        ends = list(itertools.accumulate(map(int, sizes.split(","))))
        texts = [joined[start:end].decode("utf-8") for start, end in zip([0, *ends[:-1]], ends, strict=True)]
        keys = [digests[i:i + 16] for i in range(0, len(digests), 16)]
        if numbers != sorted(numbers):  # (they come in order; never trust it)
            order = sorted(range(len(numbers)), key=numbers.__getitem__)
            numbers, keys = [numbers[i] for i in order], [keys[i] for i in order]
            texts = [texts[i] for i in order]
        return numbers, keys, texts

    def renew(self, claim: Claim) -> None:
        """Extend the claim's lease. Raises LeaseLostError (a fencing refusal) if it was taken over."""
        try:
            with self._write() as conn:
                self._check_token(conn, claim)
                conn.execute("UPDATE claims SET expires_at = ? WHERE id = ?",
                             (time.time() + self.settings.lease_seconds, claim.id))
        except LeaseLostError:
            with self._write() as conn:
                _count_refusals(conn, 1)
            raise

    def _check_token(self, conn: sqlite3.Connection, claim: Claim) -> None:
        row = conn.execute("SELECT token, state FROM claims WHERE id = ?", (claim.id,)).fetchone()
        if row is None or row[0] != claim.token or row[1] != "active":
            state = "gone" if row is None else row[1]
            raise LeaseLostError(f"claim {claim.id} (chunk {claim.chunk}) is {state}: its lease expired "
                                 "and its contents went back to pending; this worker's result is dropped")

    def commit(self, claim: Claim, done: Iterable[tuple[bytes, int]],
               failed: Iterable[tuple[bytes, str]] = (), checksum: bytes | None = None) -> int:
        """Mark `done` (hash, slot) pairs done and count `failed` (hash, reason) attempts, in one
        transaction, only if the claim's token still matches (fencing). Raises LeaseLostError if not.
        `checksum` is that of the claim's chunk file, recorded with its rows. The claim's other contents
        (the backend failed them, not their text) go back to pending without an attempt.
        Returns how many failed contents ran out of attempts and are now `failed`."""
        (result,) = self.commit_many([Finished(claim, list(done), list(failed), checksum)])
        if isinstance(result, LeaseLostError):
            raise result
        return result

    def commit_many(self, finished: Sequence[Finished]) -> list[int | LeaseLostError]:
        """`commit` for several claims in one transaction (so that a page their rows share is logged
        once). Each claim is fenced alone: one whose token no longer matches is refused (its
        LeaseLostError returned in its place, counted in `meta.fencing_refusals`), the others commit.
        Returns, claim by claim, how many failed contents ran out of attempts, or the refusal."""
        refused: dict[int, LeaseLostError] = {}  # position in `finished` -> its refusal
        with self._write() as conn:
            fenced: list[Finished] = []
            for i, f in enumerate(finished):
                try:
                    self._check_token(conn, f.claim)
                    fenced.append(f)
                except LeaseLostError as exc:
                    refused[i] = exc
            if refused:
                _count_refusals(conn, len(refused))
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?)",
                             [(f.claim.chunk, f.checksum) for f in fenced if f.checksum is not None])
            # In claim order: consecutive statements land on neighbouring pages of staged and contents.
            seq_of = {h: seq for f in fenced for h, seq in zip(f.claim.hashes, f.claim.seqs, strict=True)}
            done = sorted((seq_of[h], h) for f in fenced for h, _ in f.done)
            for f in fenced:
                # The claim's rows not done (failed, by their text or by the backend) are free again
                # (those out of attempts are marked failed below); its other rows, done, all go.
                done_here = {h for h, _ in f.done}
                free = [seq_of[h] for h in f.claim.hashes if h not in done_here]
                if free:
                    conn.execute("UPDATE staged SET claim_id = NULL WHERE seq IN (SELECT value FROM "
                                 "json_each(?)) AND claim_id = ?", (orjson.dumps(free), f.claim.id))
                if f.done:
                    params = _done_rows(f, seq_of)
                    for statement in _DONE_CONTENTS:
                        conn.execute(statement, params)
            hashes = sorted(h for _, h in done)
            seqs = [seq for seq, _ in done]
            # Their documents serve them from now on (migrations/0011: no document row changes).
            live = conn.execute("""SELECT count(*) FROM documents WHERE deleted = 0
                AND seq IN (SELECT value FROM json_each(?))""", (orjson.dumps(seqs),)).fetchone()[0]
            _counts.commit_done(conn, seqs, live)
            gave_up = dict.fromkeys((f.claim.id for f in fenced), 0)
            for f in fenced:
                for h, reason in f.failed:
                    row = conn.execute("""UPDATE contents SET attempts = attempts + 1, error = ?2,
                        state = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE 'pending' END
                        WHERE seq = ?4 AND hash = ?1 RETURNING state""",
                        (h, reason, self.settings.retry_attempts, seq_of[h])).fetchone()
                    if row is not None and row[0] == "failed":
                        gave_up[f.claim.id] += 1
                        conn.execute("UPDATE staged SET claim_id = ? WHERE seq = ?",
                                     (_staging.FAILED, seq_of[h]))
            # Long documents whose last chunk this was are served now (or failed, with it).
            _wholes.settle(conn, hashes + [h for f in fenced for h, _ in f.failed])
            crash_point("mid-commit")
            conn.executemany("UPDATE claims SET state = 'committed' WHERE id = ?",
                             ((f.claim.id,) for f in fenced))
        return [refused[i] if i in refused else gave_up[f.claim.id] for i, f in enumerate(finished)]

    def release(self, claim: Claim) -> None:
        """Give a claim's contents back to pending (Ctrl-C, a worker that gave up)."""
        with self._write() as conn:
            cur = conn.execute("UPDATE claims SET state = 'released' WHERE id = ? AND token = ? "
                               "AND state = 'active'", (claim.id, claim.token))
            if cur.rowcount:
                free_claimed(conn, claim.id)

    def retry_failed(self) -> int:
        with self._write() as conn:
            conn.execute("UPDATE contents SET state = 'pending', error = NULL WHERE state = 'failed' "
                         "AND parts > 0")
            conn.execute("UPDATE staged SET claim_id = NULL WHERE claim_id = ?", (_staging.FAILED,))
            return conn.execute("UPDATE contents SET state = 'pending', attempts = 0, error = NULL "
                                "WHERE state = 'failed'").rowcount

    # -- runs -----------------------------------------------------------------------------------

    def start_run(self) -> int:
        with self._write() as conn:
            # A run whose owner died while 'running' was interrupted.
            for rid, owner in conn.execute("SELECT id, owner FROM runs WHERE state = 'running'").fetchall():
                if owner_is_dead(owner):
                    conn.execute("UPDATE runs SET state = 'interrupted' WHERE id = ?", (rid,))
            rid = conn.execute("INSERT INTO runs (started_at, owner, state) VALUES (?, ?, 'running')",
                               (time.time(), current_owner())).lastrowid
            assert rid is not None
            return rid

    def finish_run(self, run_id: int, state: str, summary: dict[str, object]) -> None:
        with self._write() as conn:
            conn.execute("UPDATE runs SET finished_at = ?, state = ?, summary = ? WHERE id = ?",
                         (time.time(), state, json.dumps(summary), run_id))
        self.checkpoint()

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

    # -- queries --------------------------------------------------------------------------------

    def status_counts(self) -> dict[str, object]:
        """What `indexer status` reports, from one snapshot. The counts are read from `state_counts`
        (a few rows, kept with the rows they count: migrations/0008, indexer/_counts.py) where the
        manifest has it; a read-only manifest from before it is counted row by row."""
        with self._snapshot() as conn:
            counts = self._kept_counts(conn) if self._has_table("state_counts") else _recount(conn)
            # Claimed contents are kept with the pending ones; those in claims are few.
            claimed = _staging.claimed_count(conn) if self._has_table("staged") else conn.execute(
                "SELECT count(*) FROM contents WHERE claim_id IS NOT NULL AND state = 'claimed'"
            ).fetchone()[0]
            active = conn.execute("SELECT count(*) FROM claims WHERE state = 'active'").fetchone()[0]
            refusals = conn.execute("SELECT value FROM meta WHERE key = 'fencing_refusals'").fetchone()[0]
            run = conn.execute("""SELECT id, state, started_at, finished_at, owner FROM runs
                                  ORDER BY id DESC LIMIT 1""").fetchone() if self._has_table("runs") else None
        last_run = None
        if run is not None:
            state = "interrupted" if run[1] == "running" and owner_is_dead(run[4]) else run[1]
            last_run = {"id": run[0], "state": state, "started_at": run[2], "finished_at": run[3]}
        return {
            "documents": sum(counts[s][1] for s in _COUNTED),
            "pending": counts["pending"][1],
            "done": counts["done"][1],
            "failed": counts["failed"][1],
            "deleted": counts["deleted"][1],
            "chunks": sum(counts[s][2] for s in _COUNTED),
            "truncated": sum(counts[s][3] for s in _COUNTED),
            "contents": {"pending": counts["pending"][0] - claimed, "claimed": claimed,
                         "done": counts["done"][0], "failed": counts["failed"][0]},
            "active_claims": active,
            "fencing_refusals": refusals,
            "last_run": last_run,
        }

    @staticmethod
    def _kept_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int, int]]:
        return {state: (contents, documents, chunks, truncated) for state, contents, documents, chunks,
                truncated in conn.execute("SELECT * FROM state_counts")}

    def counts_problems(self) -> list[str]:
        """How the kept counts differ from a recount of the rows, in one snapshot (`verify`)."""
        if not self._has_table("state_counts"):
            return []
        with self._snapshot() as conn:
            kept, actual = self._kept_counts(conn), _recount(conn)
            misnumbered = conn.execute(f"SELECT count(*) FROM documents d {_MISNUMBERED}").fetchone()[0]
        out = []
        if misnumbered:  # the counts and commits find documents by their content's number
            out.append(f"{misnumbered} document(s) point at their content by a number (documents.seq) "
                       "that is not its own")
        for state, counted in actual.items():
            for column, was, now in zip(_COUNT_COLUMNS, kept.get(state, (0, 0, 0, 0)), counted, strict=True):
                if was != now:
                    out.append(f"status counts: {column} of state {state} are kept as {was}, but the "
                               f"rows hold {now}")
        return out

    def recount(self) -> None:
        """Set the kept counts from a recount of the rows, each document's content number from its
        hash first (`verify --repair`)."""
        with self._write() as conn:
            conn.execute(f"""UPDATE documents AS d SET seq = (SELECT seq FROM contents WHERE hash = d.hash)
                             {_MISNUMBERED}""")
            conn.execute("DELETE FROM state_counts")
            conn.executemany("INSERT INTO state_counts VALUES (?, ?, ?, ?, ?)",
                             ((state, *row) for state, row in _recount(conn).items()))

    def failures(self, limit: int = 100) -> list[tuple[str, str]]:
        """(document id, reason) of live documents whose content failed."""
        return self.conn.execute("""SELECT d.id, c.error FROM documents d JOIN contents c ON c.hash = d.hash
            WHERE d.deleted = 0 AND c.state = 'failed' ORDER BY d.id LIMIT ?""", (limit,)).fetchall()

    def served_slots(self) -> list[tuple[str, int]]:
        """(id, slot) of every live document with a vector of its own, in slot order (one snapshot);
        a long document, served as the mean of its chunks, has none (`Index.chunks()` has them)."""
        return self.conn.execute(f"""SELECT d.id, c.slot FROM documents d JOIN contents c
            ON c.hash = {SERVED_HASH} WHERE d.deleted = 0 AND c.parts = 0 ORDER BY c.slot, d.id""").fetchall()

    def served_count(self) -> int:
        return int(self.conn.execute(SERVED_COUNT_SQL).fetchone()[0])

    def slots_of(self, ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for part, marks in in_batches(ids):
            out.update(self.conn.execute(f"""SELECT d.id, c.slot FROM documents d JOIN contents c
                ON c.hash = {SERVED_HASH} WHERE d.deleted = 0 AND c.parts = 0 AND d.id IN ({marks})""",
                part).fetchall())
        return out

    def done_slots(self) -> list[tuple[bytes, int]]:
        return self.conn.execute("SELECT hash, slot FROM contents WHERE state = 'done' AND parts = 0"
                                 ).fetchall()

    def broken_wholes(self) -> list[tuple[bytes, str]]:
        return _wholes.broken_wholes(self.conn)

    def done_slots_and_active_chunks(self) -> tuple[list[tuple[bytes, int]], set[int]]:
        """Both from one snapshot: a claim committed between two separate reads would be in neither."""
        with self._snapshot():
            return self.done_slots(), self.active_chunks()

    def _has_table(self, name: str) -> bool:
        """False for a table of a later migration that a read-only manifest has not had applied."""
        return self.conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                                 (name,)).fetchone() is not None

    def chunk_checksums(self) -> dict[int, bytes]:
        """What `VectorStore.checksums_of` gave for each chunk when it was written (readers take the
        whole file's part through `vectors.chunk_checksums`)."""
        if not self._has_table("chunks"):
            return {}
        return dict(self.conn.execute("SELECT chunk, checksum FROM chunks").fetchall())

    def record_checksums(self, checksums: dict[int, bytes]) -> None:
        """Record checksums of chunks written before checksums were kept (verify --repair)."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?)", checksums.items())

    def forget_chunks(self, chunks: Iterable[int]) -> None:
        """Drop the checksums of chunk files that are deleted (compact)."""
        with self._write() as conn:
            conn.executemany("DELETE FROM chunks WHERE chunk = ?", ((c,) for c in chunks))

    def stored_config(self) -> str | None:
        """The text of index.toml kept in the manifest, if any."""
        if not self._has_table("config"):
            return None
        row = self.conn.execute("SELECT value FROM config WHERE key = 'index.toml'").fetchone()
        return None if row is None else str(row[0])

    def store_config(self, text: str) -> None:
        """Keep a copy of index.toml (at creation; for an older index, the first time a writer opens it)."""
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO config VALUES ('index.toml', ?)", (text,))

    def active_chunks(self) -> set[int]:
        return {r[0] for r in self.conn.execute("SELECT chunk FROM claims WHERE state = 'active'")}

    def next_chunk(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key = 'next_chunk'").fetchone()[0])

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])

    # -- maintenance ----------------------------------------------------------------------------

    def requeue(self, hashes: Iterable[bytes], reason: str) -> int:
        """Send done contents whose vectors are bad back to pending (verify --repair). Their documents,
        and those of the long documents they are chunks of, stop serving the bad vector at once.
        Returns how many contents (and wholes) went back to pending."""
        hashes = list(hashes)
        with self._write() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS requeued (hash BLOB PRIMARY KEY) WITHOUT ROWID")
            conn.execute("DELETE FROM requeued")
            conn.executemany("INSERT OR IGNORE INTO requeued VALUES (?)", ((h,) for h in hashes))
            # The long documents made of them: not whole any more, not served until embedded again.
            conn.execute("""INSERT OR IGNORE INTO requeued SELECT whole FROM text_chunks
                            WHERE hash IN (SELECT hash FROM requeued)""")
            wholes = conn.execute("""UPDATE contents SET state = 'pending' WHERE parts > 0
                                     AND state = 'done' AND hash IN (SELECT hash FROM requeued)""").rowcount
            # One pass over documents: no index on ready_hash (commits would pay for it on every row).
            # Those whose own content goes back serve nothing either, not an older version.
            conn.execute("""UPDATE documents SET ready_hash = NULL
                WHERE ready_hash IN (SELECT hash FROM requeued) OR hash IN (SELECT hash FROM requeued)""")
            contents = conn.execute("""UPDATE contents SET state = 'pending', slot = NULL, error = ?
                WHERE hash IN (SELECT hash FROM requeued) AND state = 'done'""", (reason,)).rowcount
            return wholes + int(contents)

    def drop_unreferenced_contents(self) -> int:
        """Forget contents no live or served document points at (their slots become free)."""
        with self._write() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS kept (hash BLOB PRIMARY KEY) WITHOUT ROWID")
            conn.execute("DELETE FROM kept")
            # A live document whose own content is done serves it: the one it served before goes.
            conn.execute(f"""UPDATE documents AS d SET ready_hash = hash
                WHERE deleted = 0 AND ready_hash IS NOT hash AND {OWN_DONE}""")
            conn.execute("""INSERT OR IGNORE INTO kept SELECT hash FROM documents WHERE deleted = 0
                UNION ALL SELECT ready_hash FROM documents WHERE deleted = 0 AND ready_hash IS NOT NULL""")
            # The chunks of the long documents kept.
            conn.execute("""INSERT OR IGNORE INTO kept SELECT t.hash FROM text_chunks t
                            WHERE t.whole IN (SELECT hash FROM kept)""")
            # No live document has them (status counts: indexer/_counts.py), and no whole counts.
            # Nor does an active claim hold them (a claim left by a dead sync is freed by the next).
            unkept = """WHERE c.parts = 0 AND c.hash NOT IN (SELECT hash FROM kept)
                AND NOT EXISTS (SELECT 1 FROM staged s JOIN claims k ON k.id = s.claim_id
                                WHERE s.seq = c.seq AND k.state = 'active')"""
            for state, n in conn.execute(f"SELECT {_counts.BUCKET}, count(*) FROM contents c {unkept} "
                                         "GROUP BY 1").fetchall():
                _counts.add(conn, state, contents=-n)
            conn.execute(f"DELETE FROM staged WHERE seq IN (SELECT c.seq FROM contents c {unkept})")
            dropped = conn.execute(f"DELETE FROM contents AS c {unkept}").rowcount
            conn.execute("DELETE FROM contents WHERE parts > 0 AND hash NOT IN (SELECT hash FROM kept)")
            conn.execute("DELETE FROM text_chunks WHERE whole NOT IN (SELECT hash FROM kept)")
            # Deleted documents served those: forget it, so that one coming back never points at a
            # content that is gone, or that comes back later not done, without a slot.
            conn.execute("""UPDATE documents SET ready_hash = NULL WHERE ready_hash IS NOT NULL
                AND ready_hash NOT IN (SELECT hash FROM contents)""")
            # Nor by number: a number freed may be given to a new content (documents.seq, 0010).
            conn.execute("""UPDATE documents SET seq = NULL WHERE deleted != 0 AND seq IS NOT NULL
                AND seq NOT IN (SELECT seq FROM contents)""")
            return dropped

    def allocate_chunk(self, on_chunk: object = None) -> int:
        with self._write() as conn:
            chunk = int(conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'next_chunk' "
                                     "RETURNING value - 1").fetchone()[0])
            if callable(on_chunk):
                on_chunk(chunk)
            return chunk

    def move_slots(self, moves: Sequence[tuple[int, int]], checksums: dict[int, bytes],
                   emptied: Iterable[int]) -> None:
        """Repoint done contents from old to new slots in one transaction (compact), with the
        checksums of the new chunks; the `emptied` chunks lose theirs."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?)", checksums.items())
            conn.executemany("DELETE FROM chunks WHERE chunk = ?", ((c,) for c in emptied))
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS slot_moves (old INTEGER PRIMARY KEY, new INTEGER)")
            conn.execute("DELETE FROM slot_moves")
            conn.executemany("INSERT INTO slot_moves VALUES (?, ?)", moves)
            # Two steps, so that UNIQUE(slot) never sees the same value twice mid-update.
            conn.execute("UPDATE contents SET slot = -1 - slot WHERE slot IN (SELECT old FROM slot_moves)")
            conn.execute("""UPDATE contents SET slot = (SELECT new FROM slot_moves WHERE old = -1 - slot)
                            WHERE slot < 0""")

    # -- push state (push.py): what each target holds -------------------------------------------

    def push_target(self, key: str, *, create: bool = False) -> int | None:
        """The id of the push target `key`, made if `create`; None if unknown."""
        with self._write() as conn:
            row = conn.execute("SELECT id FROM push_targets WHERE target = ?", (key,)).fetchone()
            if row is None and create:
                row = conn.execute("INSERT INTO push_targets (target, created_at) VALUES (?, ?) RETURNING id",
                                   (key, time.time())).fetchone()
        return None if row is None else int(row[0])

    def forget_pushed(self, target_id: int) -> None:
        """The target holds nothing (it was dropped or replaced): the next push sends everything."""
        with self._write() as conn:
            conn.execute("DELETE FROM pushed WHERE target_id = ?", (target_id,))

    def mark_pushing(self, target_id: int, ids: Sequence[str]) -> None:
        """Before the target is touched for `ids`: what it holds of them becomes unknown (NULL)."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO pushed (target_id, doc_id, hash) VALUES (?, ?, NULL)",
                             [(target_id, i) for i in ids])

    def mark_pushed(self, target_id: int, rows: Sequence[tuple[str, bytes]]) -> None:
        """After the target took (doc id, content hash) rows."""
        with self._write() as conn:
            conn.executemany("UPDATE pushed SET hash = ? WHERE target_id = ? AND doc_id = ?",
                             [(h, target_id, i) for i, h in rows])

    def mark_unpushed(self, target_id: int, ids: Sequence[str]) -> None:
        """After the target deleted `ids`."""
        with self._write() as conn:
            conn.executemany("DELETE FROM pushed WHERE target_id = ? AND doc_id = ?",
                             [(target_id, i) for i in ids])

    def finish_push(self, target_id: int) -> None:
        with self._write() as conn:
            conn.execute("UPDATE push_targets SET last_push_at = ? WHERE id = ?", (time.time(), target_id))


# What a push sends, read in one snapshot (push.py). Served documents whose content the target does
# not hold (never sent, changed, or left unknown by a push that stopped), in slot order so that store
# chunks are read in turn; `known` says whether the target may hold an older row of the document.
PUSH_UPSERTS_SQL = f"""SELECT d.id, c.hash, c.slot, p.doc_id IS NOT NULL AS known
    FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    LEFT JOIN pushed p ON p.target_id = ? AND p.doc_id = d.id
    WHERE d.deleted = 0 AND (p.hash IS NULL OR p.hash != c.hash)
    ORDER BY c.slot"""
# Documents the target may hold that the index does not serve (deleted, or gone from the documents).
PUSH_DELETES_SQL = f"""SELECT p.doc_id FROM pushed p WHERE p.target_id = ? AND NOT EXISTS (
    SELECT 1 FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    WHERE d.id = p.doc_id AND d.deleted = 0)"""
SERVED_COUNT_SQL = f"""SELECT count(*) FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    WHERE d.deleted = 0"""


def _done_rows(finished: Finished, seq_of: dict[bytes, int]) -> dict[str, object]:
    """The parameters of _DONE_CONTENTS for a claim's rows done (their slots are its chunk's)."""
    first = min(slot for _, slot in finished.done)
    seqs: list[int | None] = [None] * (max(slot for _, slot in finished.done) - first + 1)
    hashes = bytearray(16 * len(seqs))
    for h, slot in finished.done:
        seqs[slot - first] = seq_of[h]
        hashes[16 * (slot - first):16 * (slot - first + 1)] = h
    return {"seqs": orjson.dumps(seqs), "hashes": bytes(hashes), "first": first, "claim": finished.claim.id,
            "lo": finished.claim.seqs[0], "hi": finished.claim.seqs[-1]}


def _count_refusals(conn: sqlite3.Connection, n: int) -> None:
    """`n` more fencing refusals (a renew or commit of a claim taken over), for `status`."""
    conn.execute("UPDATE meta SET value = value + ? WHERE key = 'fencing_refusals'", (n,))


_COUNTED = ("pending", "done", "failed")  # the rows of state_counts for contents; claimed is in pending
_COUNT_COLUMNS = ("contents", "documents", "chunks", "truncated")


def _recount(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int, int]]:
    """state -> (contents, documents, chunks, truncated) as `state_counts` keeps them
    (migrations/0008 says what each is), counted from the rows: documents by the state of the content
    with their hash (not by the content number the kept counts follow, which `counts_problems`
    checks apart)."""
    out = {state: [0, 0, 0, 0] for state in (*_COUNTED, "deleted")}
    for state, n in conn.execute(f"SELECT {_counts.BUCKET}, count(*) FROM contents c WHERE parts = 0 "
                                 "GROUP BY 1"):
        out[state][0] = n
    for state, *values in _counts.documents_by_state(
            conn, "FROM documents d JOIN contents c ON c.hash = d.hash WHERE d.deleted = 0"):
        out[state][1:] = values
    out["deleted"][1] = conn.execute("SELECT count(*) FROM documents WHERE deleted != 0").fetchone()[0]
    return {state: (a, b, c, d) for state, (a, b, c, d) in out.items()}


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


def _printable(s: str) -> str:
    """A place name that SQLite and JSON can hold: an undecodable file name's surrogates escaped."""
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _places_json(places: list[int | str]) -> bytes:
    try:
        return orjson.dumps(places)
    except TypeError:
        return orjson.dumps([_printable(p) if isinstance(p, str) else p for p in places])


def _normalize_sql(sql: str) -> str:
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")").strip()
