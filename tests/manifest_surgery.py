"""The only SQL the tests write themselves: manifests as older indexers left them (schema surgery, in
the table layouts of those older schemas, which no longer change), and SQLite files that are not an
index's manifest; and `Tamper`, writes that damage or age a current manifest (test seams: no code of the
indexer needs them, so they live here). Everything a test reads from a manifest goes through the
manifest package (indexer.manifest's `Inspection`).

    apply_by_hand(db, files)        apply numbered migration files one at a time, as old indexers did
    downgrade_to_schema_1(manifest) make a manifest look as schema version 1 left it
    index_with_work_at_schema(...)  an index whose manifest an older schema wrote, with work in each state
    add_rows_before_state_counts    hand-written rows of the 0008 test (shared, deleted, truncated, long)
    add_rows_before_staged_texts    hand-written rows of the 0009 test (long, re-queued); the counts kept
    rewind_before_served_once_done  as every indexer before 0011 left ready_hash, its ledger row gone
    add_document_at_schema_1        a content and its document in schema 1's layout
    make_foreign_sqlite(directory)  someone else's SQLite database as manifest.sqlite
    make_blank_sqlite(path)         an SQLite header page: no table, no application_id
    Tamper                          a claim's lease moved, checksums or config copy forgotten, counts
                                    skewed, a content unfinished, a document misnumbered, a future migration
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import indexer
from indexer.manifest import Inspection, _migrations, content_hash, migrations_dir
from indexer.manifest._reports import recount_rows
from indexer.settings import Settings


def apply_by_hand(db: Path, files: list[Path]) -> None:
    """Apply migration files to `db` one at a time, each in its own transaction with its ledger row,
    closing and reopening the database between steps (an old indexer, upgraded again and again)."""
    for f in files:
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute(_migrations.LEDGER)
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                f"INSERT INTO schema_migrations VALUES ({int(f.name[:4])}, '{f.stem}', {time.time()});\n"
                + f.read_text(encoding="utf-8") + "\nCOMMIT;")
        finally:
            conn.close()


def downgrade_to_schema_1(manifest: Path) -> None:
    """Make a manifest look as an indexer of schema version 1 left it: drop every table and trigger that
    a later migration created and the ledger rows of those migrations, and give `contents` (texts
    back from `staged`), `claims` and `documents` (and its index) their first shape. (0005's columns
    of `contents` need not go: 0003 rebuilds it from its first eight columns anyway.)"""
    first = sqlite3.connect(":memory:")
    first.executescript(next(migrations_dir().glob("0001_*.sql")).read_text(encoding="utf-8"))
    original = {n for (n,) in first.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    contents_sql = [sql for (sql,) in first.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'contents' AND sql IS NOT NULL ORDER BY type DESC")]
    documents_index_sql = [sql for (sql,) in first.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'documents' AND type = 'index' AND sql IS NOT NULL")]
    first.close()
    conn = sqlite3.connect(manifest, isolation_level=None)
    later = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
             if n not in original and n != "schema_migrations" and not n.startswith("sqlite_")]
    triggers = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    conn.executescript("BEGIN; " + "".join(f'DROP TRIGGER "{n}"; ' for n in triggers)  # 1 had none
                       + "ALTER TABLE contents RENAME TO contents_later; "
                       + "".join(f"{sql}; " for sql in contents_sql)
                       + """INSERT INTO contents (hash, state, chars, text, slot, attempts, error)
                            SELECT c.hash, c.state, c.chars, s.text, c.slot, c.attempts, c.error
                            FROM contents_later c LEFT JOIN staged s USING (seq) WHERE c.parts = 0;
                            DROP TABLE contents_later;
                            ALTER TABLE claims DROP COLUMN first_seq;
                            ALTER TABLE claims DROP COLUMN last_seq;
                            DROP INDEX documents_by_content;
                            ALTER TABLE documents DROP COLUMN seq; """
                       + "".join(f"{sql}; " for sql in documents_index_sql)
                       + "".join(f'DROP TABLE "{n}"; ' for n in later)
                       + "DELETE FROM schema_migrations WHERE version >= 2; COMMIT;")
    conn.close()


def index_with_work_at_schema(tmp_path: Path, fake_embedder: object, last_version: int, settings: Settings,
                              contents: Sequence[tuple[str, str, str]] = (("b", "beta", "pending"),
                                                                         ("c", "gamma", "claimed")),
                              failed: bool = False) -> Path:
    """An index whose manifest was last written by the schema of migrations 1..last_version, holding
    "a" done, and for each (id, text, state) of `contents` a document and its content in that state:
    pending with its text staged, claimed by a dead worker (claim 5), or failed after 3 attempts (and,
    with `failed`, "f" failed for good after it had been embedded once)."""
    ix = tmp_path / "ix"
    docs = [("a", "alpha"), ("f", "failing")] if failed else [("a", "alpha")]
    indexer.sync(ix, docs, embedder=fake_embedder, settings=settings)  # type: ignore[arg-type]
    old = tmp_path / "old.sqlite"
    apply_by_hand(old, [f for f in sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql"))
                        if int(f.name[:4]) <= last_version])
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("ATTACH ? AS new", (str(ix / "manifest.sqlite"),))
    conn.executescript("""BEGIN;
        INSERT INTO contents (hash, state, chars, text, slot, claim_id, attempts, error)
            SELECT hash, state, chars, NULL, slot, NULL, attempts, error FROM new.contents;
        -- As every indexer before 0011 wrote them: ready_hash is the hash once its content is done.
        INSERT INTO documents SELECT d.id, d.hash, iif(c.state = 'done', d.hash, d.ready_hash), d.deleted
            FROM new.documents d LEFT JOIN new.contents c ON c.hash = d.hash;
        UPDATE meta SET value = (SELECT value FROM new.meta WHERE key = 'next_chunk')
            WHERE key = 'next_chunk';
        INSERT INTO claims VALUES (5, 'tok', 'elsewhere|1|0', 9, 0, 'active');
        COMMIT;""")
    conn.execute("DETACH new")
    for doc_id, text, state in contents:
        h = content_hash(text)
        conn.execute("INSERT INTO contents (hash, state, chars, text, claim_id, attempts, error) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (h, state, len(text), text, 5 if state == "claimed" else None,
                      3 if state == "failed" else 0, "it failed" if state == "failed" else None))
        conn.execute("INSERT INTO documents (id, hash) VALUES (?, ?)", (doc_id, h))
    if failed:
        conn.executescript("""
            UPDATE contents SET state = 'failed', error = 'boom', attempts = 3, text = 'failing',
                slot = NULL WHERE hash = (SELECT hash FROM documents WHERE id = 'f');
            UPDATE documents SET ready_hash = NULL WHERE id = 'f';""")
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        (ix / f"manifest.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(old, ix / "manifest.sqlite")
    return ix


def add_rows_before_state_counts(manifest: Path) -> None:
    """To a manifest of the schema before 0008: "a2" sharing a's content, "gone" deleted (b's content),
    "t" truncated ("cut text") and "long", a long document of two pending chunks ("long", "text")."""
    whole, parts = content_hash("long text"), [content_hash("long"), content_hash("text")]
    conn = sqlite3.connect(manifest, isolation_level=None)
    conn.executescript("BEGIN")
    conn.execute("INSERT INTO documents SELECT 'a2', hash, ready_hash, 0 FROM documents WHERE id = 'a'")
    conn.execute("INSERT INTO documents (id, hash, deleted) SELECT 'gone', hash, 1 FROM documents "
                 "WHERE id = 'b'")
    conn.execute("INSERT INTO contents (hash, chars, text, truncated) VALUES (?, 9, 'cut text', 1)",
                 (content_hash("cut text"),))
    conn.execute("INSERT INTO documents (id, hash) VALUES ('t', ?)", (content_hash("cut text"),))
    conn.execute("INSERT INTO contents (hash, chars, parts) VALUES (?, 9, 2)", (whole,))
    for ordinal, (h, text) in enumerate(zip(parts, ["long", "text"], strict=True)):
        conn.execute("INSERT INTO contents (hash, chars, text) VALUES (?, 4, ?)", (h, text))
        conn.execute("INSERT INTO text_chunks VALUES (?, ?, ?, ?, ?)", (whole, ordinal, h, 5 * ordinal,
                                                                         5 * ordinal + 4))
    conn.execute("INSERT INTO documents (id, hash) VALUES ('long', ?)", (whole,))
    conn.execute("COMMIT")
    conn.close()


def add_rows_before_staged_texts(manifest: Path) -> dict[str, tuple[int, int, int, int]]:
    """To a manifest of the schema before 0009: "long", a long document of two pending chunks ("long",
    "text"), and "l", whose content `verify --repair` re-queued (no text left); the counts the 0008
    schema keeps, recounted. Returns them (state -> contents, documents, chunks, truncated)."""
    whole, parts = content_hash("long text"), [content_hash("long"), content_hash("text")]
    lost = content_hash("lost")
    conn = sqlite3.connect(manifest, isolation_level=None)
    conn.executescript("BEGIN")
    conn.execute("INSERT INTO contents (hash, chars, parts) VALUES (?, 9, 2)", (whole,))
    conn.execute("INSERT INTO contents (hash, chars, text) VALUES (?, 4, 'long')", (parts[0],))
    conn.execute("INSERT INTO contents (hash, chars, text) VALUES (?, 4, 'text')", (parts[1],))
    conn.executemany("INSERT INTO text_chunks VALUES (?, ?, ?, ?, ?)",
                     [(whole, 0, parts[0], 0, 4), (whole, 1, parts[1], 5, 9)])
    conn.execute("INSERT INTO documents (id, hash) VALUES ('long', ?)", (whole,))
    conn.execute("INSERT INTO contents (hash, chars, error) VALUES (?, 4, 're-queued')", (lost,))
    conn.execute("INSERT INTO documents (id, hash) VALUES ('l', ?)", (lost,))
    # The rows above were written by hand: the counts the 0008 schema keeps, from a recount.
    conn.execute("DELETE FROM state_counts")
    conn.executemany("INSERT INTO state_counts VALUES (?, ?, ?, ?, ?)",
                     ((state, *row) for state, row in recount_rows(conn).items()))
    kept = Inspection(conn).state_counts()
    conn.execute("COMMIT")
    conn.close()
    return kept


def rewind_before_served_once_done(manifest: Path) -> None:
    """As every indexer before 0011 left a manifest: ready_hash set to the hash of each document whose
    content is done; and 0011's ledger row gone, so that the next open applies it again."""
    conn = sqlite3.connect(manifest, isolation_level=None)
    conn.executescript("""BEGIN;
        UPDATE documents SET ready_hash = hash WHERE hash IN (SELECT hash FROM contents WHERE state = 'done');
        DELETE FROM schema_migrations WHERE version = 11;
        COMMIT;""")
    conn.close()


def add_document_at_schema_1(manifest: Path) -> None:
    """The document "doc" and its content x'00' ("abc", its text kept in `contents` as schema 1 did)."""
    conn = sqlite3.connect(manifest, isolation_level=None)
    conn.execute("INSERT INTO contents (hash, chars, text) VALUES (x'00', 3, 'abc')")
    conn.execute("INSERT INTO documents (id, hash) VALUES ('doc', x'00')")
    conn.close()


def make_foreign_sqlite(directory: Path, application_id: int = 0) -> None:
    """Someone else's SQLite database as `directory`/manifest.sqlite: a table of users, and the
    application_id given (0: none)."""
    conn = sqlite3.connect(directory / "manifest.sqlite")
    conn.execute("CREATE TABLE users (name TEXT)")
    conn.execute("INSERT INTO users VALUES ('ada')")
    if application_id:
        conn.execute(f"PRAGMA application_id = {application_id}")
    conn.commit()
    conn.close()


def make_blank_sqlite(path: Path) -> None:
    """An SQLite header page at `path`: no table, no application_id."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.execute("VACUUM")
    conn.close()


class Tamper:
    """Writes that put a current manifest in a state that only a stalled worker, damage, an older or a
    newer indexer leaves, so that tests can make one without their own SQL. Each write commits at once
    (`conn` in autocommit mode). `Tamper.open(path)` opens a connection of its own (a manifest file, or
    an index directory holding one); `Tamper(conn)` writes through one already open (a Manifest's,
    between its transactions)."""

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
        self.conn.execute("UPDATE claims SET expires_at = ? WHERE id = ?", (expires_at, claim_id))

    def forget_checksums(self) -> None:
        """No chunk checksum kept, as in an index written before they were."""
        self.conn.execute("DELETE FROM chunks")

    def forget_config(self) -> None:
        """No copy of index.toml kept, as in an index made before it was."""
        self.conn.execute("DELETE FROM config")

    def skew_state_counts(self, state: str, documents: int, chunks: int) -> None:
        """Add to the documents and chunks kept for `state`, so that they differ from the rows."""
        self.conn.execute("UPDATE state_counts SET documents = documents + ?, chunks = chunks + ? "
                          "WHERE state = ?", (documents, chunks, state))

    def unfinish_content(self, content: bytes) -> None:
        """Mark a done content pending, its slot forgotten, and nothing else changed."""
        self.conn.execute("UPDATE contents SET state = 'pending', slot = NULL WHERE hash = ?", (content,))

    def misnumber_document(self, doc_id: str) -> None:
        """Point a document at the content numbered one past its own (documents.seq)."""
        self.conn.execute("UPDATE documents SET seq = seq + 1 WHERE id = ?", (doc_id,))

    def record_future_migration(self, version: int) -> None:
        """A ledger row of a migration this indexer does not know, as a newer indexer leaves one."""
        self.conn.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', 0)", (version,))
