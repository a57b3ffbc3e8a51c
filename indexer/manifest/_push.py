"""What each push target holds (`push_targets`, `pushed`: migration 0006), and the queries a push reads
in one snapshot (push.py), on a reader's connection (`_reads.snapshot`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from ._connection import ManifestConnection
from ._queries import named_queries
from ._sql import SERVED_HASH

_QUERIES = named_queries("push.sql")


class PushState(ManifestConnection):
    """The manifest's record of what each push target holds."""

    def push_target(self, key: str, *, create: bool = False) -> int | None:
        """The id of the push target `key`, made if `create`; None if unknown."""
        with self._write() as conn:
            row = conn.execute(_QUERIES["push_target"], (key,)).fetchone()
            if row is None and create:
                row = conn.execute(_QUERIES["add_push_target"], (key, time.time())).fetchone()
        return None if row is None else int(row[0])

    def forget_pushed(self, target_id: int) -> None:
        """The target holds nothing (it was dropped or replaced): the next push sends everything."""
        with self._write() as conn:
            conn.execute(_QUERIES["forget_pushed"], (target_id,))

    def mark_pushing(self, target_id: int, ids: Sequence[str]) -> None:
        """Before the target is touched for `ids`: what it holds of them becomes unknown (NULL)."""
        with self._write() as conn:
            conn.executemany(_QUERIES["mark_pushing"], [(target_id, i) for i in ids])

    def mark_pushed(self, target_id: int, rows: Sequence[tuple[str, bytes]]) -> None:
        """After the target took (doc id, content hash) rows."""
        with self._write() as conn:
            conn.executemany(_QUERIES["mark_pushed"], [(h, target_id, i) for i, h in rows])

    def mark_unpushed(self, target_id: int, ids: Sequence[str]) -> None:
        """After the target deleted `ids`."""
        with self._write() as conn:
            conn.executemany(_QUERIES["mark_unpushed"], [(target_id, i) for i in ids])

    def finish_push(self, target_id: int) -> None:
        with self._write() as conn:
            conn.execute(_QUERIES["finish_push"], (time.time(), target_id))


# What a push sends, read in one snapshot (push.py). Served documents whose content the target does
# not hold (never sent, changed, or left unknown by a push that stopped), in slot order so that store
# chunks are read in turn; `known` says whether the target may hold an older row of the document.
_UPSERTS = f"""SELECT d.id, c.hash, c.slot, p.doc_id IS NOT NULL AS known
    FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    LEFT JOIN pushed p ON p.target_id = ? AND p.doc_id = d.id
    WHERE d.deleted = 0 AND (p.hash IS NULL OR p.hash != c.hash)
    ORDER BY c.slot"""
# Documents the target may hold that the index does not serve (deleted, or gone from the documents).
_DELETES = f"""SELECT p.doc_id FROM pushed p WHERE p.target_id = ? AND NOT EXISTS (
    SELECT 1 FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    WHERE d.id = p.doc_id AND d.deleted = 0)"""
_SERVED_COUNT = f"""SELECT count(*) FROM documents d JOIN contents c ON c.hash = {SERVED_HASH}
    WHERE d.deleted = 0"""


def served_count(snapshot: sqlite3.Connection) -> int:
    """The documents the index serves."""
    return int(snapshot.execute(_SERVED_COUNT).fetchone()[0])


def push_deletes(snapshot: sqlite3.Connection, target_id: int) -> sqlite3.Cursor:
    """(doc id,) of each document the target may hold that the index does not serve."""
    return snapshot.execute(_DELETES, (target_id,))


def push_upserts(snapshot: sqlite3.Connection, target_id: int) -> sqlite3.Cursor:
    """(doc id, content hash, slot, known) of each served document the target does not hold as served,
    in slot order."""
    return snapshot.execute(_UPSERTS, (target_id,))
