"""Whether a file is a manifest, read without writing to it (`identify`)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import ManifestError

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
