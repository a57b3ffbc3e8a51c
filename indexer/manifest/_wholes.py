"""The manifest's bookkeeping of long documents: wholes and their chunks (migrations/0005).

A document whose text fits the model's window is one content, as it always was. A longer text is a
"whole": a contents row with `parts` chunks and no text of its own, listed in text_chunks, each chunk a
content like any other (claimed, embedded, committed, shared by every document that has it). A whole
is `done` once every chunk of it is done (then documents with its hash serve it), `failed` once a chunk
failed for good, `pending` otherwise. These functions run inside the Manifest's transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import xxhash

from .._sql import in_batches
from ._staging import Content, stage_texts

if TYPE_CHECKING:
    from ..chunking import Chunker
    from ..sources import Record

# A whole's state from its chunks' states.
_SETTLE = """UPDATE contents SET state = w.state, error = w.error FROM (
    SELECT t.whole AS hash,
        CASE WHEN sum(c.state != 'done') = 0 THEN 'done'
             WHEN sum(c.state = 'failed') > 0 THEN 'failed' ELSE 'pending' END AS state,
        (SELECT 'chunk ' || t2.ordinal || ': ' || c2.error FROM text_chunks t2 JOIN contents c2
            ON c2.hash = t2.hash WHERE t2.whole = t.whole AND c2.state = 'failed'
            ORDER BY t2.ordinal LIMIT 1) AS error
    FROM text_chunks t JOIN contents c ON c.hash = t.hash
    WHERE t.whole IN (SELECT hash FROM settling) GROUP BY t.whole) AS w
    WHERE contents.hash = w.hash AND contents.parts > 0"""


@dataclass
class Staged:
    """The contents a scan batch adds: texts to embed (plain documents and chunks), wholes and their
    chunk lists."""

    contents: list[tuple[bytes, int, str, int]] = field(default_factory=list)  # hash, chars, text, cut
    wholes: list[tuple[bytes, int, int]] = field(default_factory=list)  # hash, chars, parts
    chunk_rows: list[tuple[bytes, int, bytes, int, int]] = field(default_factory=list)
    chunks: int = 0
    truncated: int = 0

    def write(self, conn: sqlite3.Connection) -> tuple[int, dict[bytes, Content]]:
        """Write them; how many contents were new (to embed), and the plain ones as they are now."""
        # A chunk re-queued by `verify --repair` lost its staged text: a new document that has it
        # stages it again (stage_texts).
        added, found = stage_texts(conn, self.contents)
        if not self.wholes:
            return added, found
        conn.executemany("INSERT OR IGNORE INTO contents (hash, chars, parts) VALUES (?, ?, ?)", self.wholes)
        conn.executemany("INSERT OR IGNORE INTO text_chunks VALUES (?, ?, ?, ?, ?)", self.chunk_rows)
        # All of a new whole's chunks may be done already (other documents have them).
        _settle_wholes(conn, [h for h, _, _ in self.wholes])
        return added, found


def stage(conn: sqlite3.Connection, todo: Sequence[tuple[bytes, str]], chunker: Chunker | None,
          split: bool) -> Staged:
    """What the new and changed texts `todo` (hash, text) add; a text known already adds nothing."""
    out = Staged()
    if chunker is None:  # an index that neither chunks nor counts: every text is one plain content
        out.contents = [(h, len(text), text, 0) for h, text in todo]
        out.chunks = len(todo)
        return out
    distinct = dict(todo)
    known: dict[bytes, tuple[int, int]] = {}  # hash -> (chunks, truncated) of the contents known already
    hashes = list(distinct)
    for part, marks in in_batches(hashes):
        known.update((h, (max(parts, 1), cut)) for h, parts, cut in conn.execute(
            f"SELECT hash, parts, truncated FROM contents WHERE hash IN ({marks})", part))
    new = {h: text for h, text in distinct.items() if h not in known}
    texts = list(new.values())
    if not split:
        for (h, text), cut in zip(new.items(), chunker.over_budget_many(texts), strict=True):
            out.contents.append((h, len(text), text, int(cut)))
            known[h] = (1, int(cut))
    else:
        for (h, text), spans in zip(new.items(), chunker.split_many(texts), strict=True):
            _add(out, h, text, spans)
            known[h] = (len(spans), 0)
    for h, _ in todo:
        out.chunks += known[h][0]
        out.truncated += known[h][1]
    return out


def _add(out: Staged, h: bytes, text: str, spans: list[tuple[int, int]]) -> None:
    if len(spans) == 1:
        out.contents.append((h, len(text), text, 0))
        return
    out.wholes.append((h, len(text), len(spans)))
    for ordinal, (start, end) in enumerate(spans):
        piece = text[start:end]
        piece_hash = xxhash.xxh3_128_digest(piece.encode("utf-8"))
        out.contents.append((piece_hash, len(piece), piece, 0))
        out.chunk_rows.append((h, ordinal, piece_hash, start, end))


def lost_part_texts(conn: sqlite3.Connection, items_sql: str, params: Mapping[str, object],
                    records: Sequence[Record], chunker: Chunker | None) -> list[tuple[bytes, int, str, int]]:
    """(hash, chars, text, 0) of chunks re-queued by `verify --repair` (their staged text is gone) of
    the wholes in this batch: the scan that sees the document again cuts it again and stages them."""
    if chunker is None:
        return []
    keys = conn.execute(items_sql + """SELECT i.key FROM items i JOIN contents w ON w.hash = i.hash
        WHERE w.parts > 0 AND EXISTS (SELECT 1 FROM text_chunks t JOIN contents c ON c.hash = t.hash
            WHERE t.whole = w.hash AND c.state = 'pending'
                AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.seq = c.seq))""", params).fetchall()
    texts = [records[k].text for (k,) in keys]
    out = []
    for text, spans in zip(texts, chunker.split_many(texts), strict=True):
        for start, end in spans:
            piece = text[start:end]
            out.append((xxhash.xxh3_128_digest(piece.encode("utf-8")), len(piece), piece, 0))
    return out


def has_wholes(conn: sqlite3.Connection) -> bool:
    """Whether the index holds any long document (one lookup)."""
    return conn.execute("SELECT 1 FROM text_chunks LIMIT 1").fetchone() is not None


def settle(conn: sqlite3.Connection, chunk_hashes: Iterable[bytes]) -> None:
    """After a commit: the wholes with any of these chunks take their new state, and the documents
    whose whole is now done serve it."""
    chunk_hashes = list(chunk_hashes)
    if not chunk_hashes or not has_wholes(conn):
        return  # an index without long documents pays one lookup a commit
    _settling(conn)
    conn.executemany("INSERT OR IGNORE INTO settling SELECT whole FROM text_chunks WHERE hash = ?",
                     ((h,) for h in chunk_hashes))
    _apply(conn)


def _settle_wholes(conn: sqlite3.Connection, wholes: Iterable[bytes]) -> None:
    _settling(conn)
    conn.executemany("INSERT OR IGNORE INTO settling VALUES (?)", ((h,) for h in wholes))
    _apply(conn)


def _settling(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS settling (hash BLOB PRIMARY KEY) WITHOUT ROWID")
    conn.execute("DELETE FROM settling")


def _apply(conn: sqlite3.Connection) -> None:
    conn.execute(_SETTLE)
    conn.execute("""UPDATE documents SET ready_hash = hash WHERE seq IN (SELECT c.seq FROM settling s
                    JOIN contents c ON c.hash = s.hash WHERE c.state = 'done')""")


def broken_wholes(conn: sqlite3.Connection) -> list[tuple[bytes, str]]:
    """(whole, what is wrong) for every whole marked done with a chunk that is not done, or without
    its chunk list: `verify` reports them, `verify --repair` re-queues them."""
    return conn.execute("""
        SELECT w.hash, 'chunk ' || t.ordinal || ' is ' || c.state FROM contents w
            JOIN text_chunks t ON t.whole = w.hash JOIN contents c ON c.hash = t.hash
            WHERE w.parts > 0 AND w.state = 'done' AND c.state != 'done' GROUP BY w.hash
        UNION ALL
        SELECT w.hash, 'its chunk list has ' || count(t.ordinal) || ' of ' || w.parts || ' chunks'
            FROM contents w LEFT JOIN text_chunks t ON t.whole = w.hash
            WHERE w.parts > 0 GROUP BY w.hash HAVING count(t.ordinal) != w.parts""").fetchall()
