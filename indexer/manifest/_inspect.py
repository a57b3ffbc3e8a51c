"""The manifest's inspection: read-only answers about its rows and its schema, as plain values, for the
tests and checks that look at what a sync, a kill or a migration left, without knowing its tables.

`Inspection.open(path)` opens a connection of its own on a manifest file or an index directory (never
making the file); `Inspection(conn)` reads through a connection already open (a Manifest's, to see its
transaction's own writes). The rows it returns are the current schema's; `live_documents`,
`contents_by_state`, `active_claims`, `migrations`, `schema_objects` and the PRAGMAs read any version.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ._queries import named_queries
from ._sql import SERVED_HASH, in_batches

_QUERIES = named_queries("inspect.sql")


@dataclass(frozen=True)
class Document:
    hash: bytes
    ready_hash: bytes | None
    deleted: int
    seq: int | None


@dataclass(frozen=True)
class Content:
    seq: int
    state: str
    chars: int
    slot: int | None
    attempts: int
    error: str | None
    parts: int
    truncated: int


@dataclass(frozen=True)
class Staged:
    seq: int
    hash: bytes
    text: str
    claim_id: int | None


@dataclass(frozen=True)
class ClaimRow:
    token: str
    owner: str
    chunk: int
    expires_at: float
    state: str
    first_seq: int | None
    last_seq: int | None


@dataclass(frozen=True)
class TextChunk:
    whole: bytes
    ordinal: int
    hash: bytes
    char_start: int
    char_end: int


@dataclass(frozen=True)
class Run:
    id: int
    state: str
    summary: str | None


@dataclass(frozen=True)
class SchemaObject:
    type: str
    name: str
    tbl_name: str
    sql: str | None


class Inspection:
    """Questions about one manifest, each answered by a read (sqlite3.Error where it cannot be read)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    @contextmanager
    def open(cls, path: Path, *, timeout: float = 5.0) -> Iterator[Inspection]:
        """An inspection of the manifest at `path` (a manifest file, or an index directory holding one),
        on a connection of its own, closed at the end; an error if there is no such file."""
        manifest = path / "manifest.sqlite" if path.is_dir() else path
        conn = sqlite3.connect(f"{manifest.resolve().as_uri()}?mode=rw", uri=True, timeout=timeout,
                               isolation_level=None)
        try:
            yield cls(conn)
        finally:
            conn.close()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Reads inside one transaction, all from the same state of the file."""
        self.conn.execute(_QUERIES["begin_snapshot"])
        try:
            yield self.conn
        finally:
            if self.conn.in_transaction:
                self.conn.execute(_QUERIES["rollback"])

    # -- rows -------------------------------------------------------------------------------------

    def documents(self) -> dict[str, Document]:
        """id -> its row, deleted documents included."""
        return {doc_id: Document(*row) for doc_id, *row in self.conn.execute(_QUERIES["documents"])}

    def contents(self) -> dict[bytes, Content]:
        """hash -> its row, long documents' wholes (parts > 0) included."""
        return {h: Content(*row) for h, *row in self.conn.execute(_QUERIES["contents"])}

    def content_states(self) -> dict[bytes, str]:
        """hash -> state of each content, 'claimed' where an active claim holds its text."""
        return dict(self.conn.execute(_QUERIES["content_states"]).fetchall())

    def staged(self) -> list[Staged]:
        """The texts waiting to be embedded, in claim order."""
        return [Staged(*row) for row in self.conn.execute(_QUERIES["staged"])]

    def claims(self) -> dict[int, ClaimRow]:
        """claim id -> its row, in the order the claims were made."""
        return {claim_id: ClaimRow(*row) for claim_id, *row in self.conn.execute(_QUERIES["claims"])}

    def text_chunks(self) -> list[TextChunk]:
        """The chunks of the long documents' texts, by whole text and ordinal."""
        return [TextChunk(*row) for row in self.conn.execute(_QUERIES["text_chunks"])]

    def runs(self) -> list[Run]:
        """The run log, oldest first."""
        return [Run(*row) for row in self.conn.execute(_QUERIES["runs"])]

    def state_counts(self) -> dict[str, tuple[int, int, int, int]]:
        """state -> (contents, documents, chunks, truncated) as kept for `indexer status`."""
        return {state: (contents, documents, chunks, truncated) for state, contents, documents, chunks,
                truncated in self.conn.execute(_QUERIES["state_counts"])}

    def meta(self) -> dict[str, int]:
        return dict(self.conn.execute(_QUERIES["meta"]).fetchall())

    def served_slots(self) -> list[tuple[str, int]]:
        """(id, slot) of every live document with a vector of its own, in slot order (one snapshot);
        a long document, served as the mean of its chunks, has none (`Index.chunks()` has them)."""
        return self.conn.execute(f"""SELECT d.id, c.slot FROM documents d JOIN contents c
            ON c.hash = {SERVED_HASH} WHERE d.deleted = 0 AND c.parts = 0 ORDER BY c.slot, d.id""").fetchall()

    def slots_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> slot of those of `ids` that are live and served a vector of their own."""
        out: dict[str, int] = {}
        for part, marks in in_batches(ids):
            out.update(self.conn.execute(f"""SELECT d.id, c.slot FROM documents d JOIN contents c
                ON c.hash = {SERVED_HASH} WHERE d.deleted = 0 AND c.parts = 0 AND d.id IN ({marks})""",
                part).fetchall())
        return out

    # -- counts of any schema version --------------------------------------------------------------

    def live_documents(self) -> int:
        return int(self.conn.execute(_QUERIES["live_documents"]).fetchone()[0])

    def contents_by_state(self) -> Counter[str]:
        """state -> how many contents are in it (schema 1 marked claimed contents 'claimed')."""
        return Counter(dict(self.conn.execute(_QUERIES["contents_by_state"]).fetchall()))

    def active_claims(self) -> int:
        return int(self.conn.execute(_QUERIES["active_claims"]).fetchone()[0])

    # -- the schema and the file -------------------------------------------------------------------

    def migrations(self) -> list[tuple[int, str, float]]:
        """(version, name, applied_at) of each migration in the ledger, by version."""
        return [(version, name, applied_at)
                for version, name, applied_at in self.conn.execute(_QUERIES["applied_migrations"])]

    def schema_objects(self) -> list[SchemaObject]:
        """Every table, index, trigger and view, in the file's order."""
        return [SchemaObject(*row) for row in self.conn.execute(_QUERIES["schema_objects"])]

    def table_names(self) -> set[str]:
        return {o.name for o in self.schema_objects() if o.type == "table"}

    def columns(self, table: str) -> list[str]:
        return [name for (name,) in self.conn.execute(_QUERIES["table_columns"], (table,))]

    def application_id(self) -> int:
        return int(self.conn.execute(_QUERIES["application_id"]).fetchone()[0])

    def integrity_check(self) -> list[str]:
        """SQLite's findings: ["ok"] for a sound file."""
        return [str(line) for (line,) in self.conn.execute(_QUERIES["integrity_check"])]

    def write_locked(self) -> bool:
        """Another connection holds the write lock now (within this connection's busy timeout)."""
        try:
            self.conn.execute(_QUERIES["try_write_lock"])
        except sqlite3.OperationalError:
            return True
        self.conn.execute(_QUERIES["rollback"])
        return False

    def dump(self) -> str:
        """The whole file as SQL text, to compare two states of it."""
        return "\n".join(self.conn.iterdump())
