"""The scan: each batch of source records upserted into the documents (`scan_batch`), new texts
staged to embed, batches grouped into few write transactions (`scanning`), and what the scan did not
see (missing ids, `delete_missing`) and skipped (`remember_skips`)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, cast

import orjson

from .._faults import crash_point
from ..sources import Record, Skip
from . import _counts, _wholes
from ._connection import ManifestConnection
from ._queries import named_queries
from ._records import ScanCounts
from ._scan_input import ScanInput, scan_input
from ._sql import SERVED_HASH
from ._staging import contents_of, stage_texts

if TYPE_CHECKING:
    from ..chunking import Chunker


_QUERIES = named_queries("scan.sql")

_NO_CONTENT = b"0" * 20  # an item's content number where the scan's upsert leaves its document alone
# The current batch's records, from the parameters :ids (a JSON array) and :hashes (16 bytes each).
_ITEMS = """WITH items (key, id, hash) AS (
    SELECT key, value, substr(:hashes, key * 16 + 1, 16) FROM json_each(:ids) WHERE value IS NOT NULL
    UNION ALL SELECT key, id, substr(:hashes, key * 16 + 1, 16) FROM scan_odd) """

# A pending content (contents c) whose text is not staged: re-queued by `verify --repair`, it waits for
# a scan that reads its text again.
_LOST_TEXT = """WHERE c.state = 'pending' AND c.parts = 0
    AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.seq = c.seq)"""


class Scan(ManifestConnection):
    """The scan's role of the manifest; its state lives on the instance while a scan runs."""

    _scan_tables_ready = False
    _scan_grouped = False  # within `scanning`: batches share write transactions
    _scan_mid_batch = False  # a scan_batch began and did not return
    _scan_written = 0  # rows the scan's earlier transactions committed
    # The data_version at which the documents were the scan's own only (None: not so), read in
    # its write transactions: another connection's commit changes it.
    _scan_alone_at: int | None = None

    def _ensure_scan_tables(self) -> None:
        if self._scan_tables_ready:
            return
        self.conn.executescript(_QUERIES["create_scan_tables"])
        self._known_skips = self.conn.execute(_QUERIES["any_skips"]).fetchone() is not None
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
        at, place = self.conn.execute(_QUERIES["seen_where"], (ordinal,)).fetchone()
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
                    _QUERIES["skip_reported"], key).fetchone():
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
            conn.execute(_QUERIES["add_batch_places"], (first, at and _printable(at), _places_json(places)))
            if odd or self._scan_odd:  # each statement costs a hand-over of the GIL to the reader thread
                conn.execute(_QUERIES["clear_odd_ids"])
                conn.executemany(_QUERIES["add_odd_id"], odd)
                self._scan_odd = bool(odd)
            before = conn.total_changes  # (rowcount is -1 for a statement that starts with WITH)
            conn.execute(_ITEMS + _QUERIES["see_items"], params)
            if conn.total_changes - before < len(scanned):  # ids seen in an earlier batch
                ids = list(ids)
                for k, seen_at in conn.execute(_ITEMS + _QUERIES["items_seen_before"], params).fetchall():
                    item = items[k]
                    counts.duplicates += 1
                    warn(item.where, f"duplicate id {item.id!r}, first seen at {self._seen_where(seen_at)}; "
                         "the first is kept")
                    conn.execute(_QUERIES["forget_odd_id"], (k,))
                    del scanned[item.id]
                    ids[k] = None
                params["ids"] = orjson.dumps(ids)
            if seen_only:
                conn.executemany(_QUERIES["see_skipped"], seen_only)
            if skips:
                conn.executemany(_QUERIES["add_skip"], skips)
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
            joined = conn.execute(_ITEMS + _QUERIES["new_and_changed"], params).fetchone()[0]
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
                conn.executemany(_QUERIES["add_new_hash"], sorted((h,) for h, _, _, _ in staged.contents))
            counts.to_embed = conn.execute(_QUERIES["count_new_hashes"]).fetchone()[0]
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
        empty = self.conn.execute(_QUERIES["no_documents"]).fetchone()[0]
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
        row = self.conn.execute(_QUERIES["count_missing"]).fetchone()
        return int(row[0])

    def remember_skips(self) -> None:
        """Keep the skips of the scan that just ran (read to its end) for the next one to compare."""
        self._ensure_scan_tables()
        with self._write() as conn:
            conn.execute(_QUERIES["clear_skips"])
            conn.execute(_QUERIES["keep_skips"])

    def live_count(self) -> int:
        return int(self.conn.execute(_QUERIES["count_live"]).fetchone()[0])

    def missing_ids(self, limit: int) -> list[str]:
        """Up to `limit` ids (in id order) of live documents the scan that just ran did not see."""
        self._ensure_scan_tables()
        return [r[0] for r in self.conn.execute(_QUERIES["missing_ids"], (limit,))]

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


def _printable(s: str) -> str:
    """A place name that SQLite and JSON can hold: an undecodable file name's surrogates escaped."""
    return s if s.isascii() else s.encode("utf-8", "backslashreplace").decode("utf-8")


def _places_json(places: list[int | str]) -> bytes:
    try:
        return orjson.dumps(places)
    except TypeError:
        return orjson.dumps([_printable(p) if isinstance(p, str) else p for p in places])
