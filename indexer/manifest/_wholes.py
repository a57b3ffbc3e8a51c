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

from ._queries import named_queries
from ._sql import in_batches
from ._staging import Content, stage_texts

if TYPE_CHECKING:
    from ..chunking import Chunker
    from ..sources import Record

_QUERIES = named_queries("wholes.sql")


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
        conn.executemany(_QUERIES["add_wholes"], self.wholes)
        conn.executemany(_QUERIES["add_chunk_rows"], self.chunk_rows)
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
    keys = conn.execute(items_sql + _QUERIES["items_with_lost_parts"], params).fetchall()
    texts = [records[k].text for (k,) in keys]
    out = []
    for text, spans in zip(texts, chunker.split_many(texts), strict=True):
        for start, end in spans:
            piece = text[start:end]
            out.append((xxhash.xxh3_128_digest(piece.encode("utf-8")), len(piece), piece, 0))
    return out


def has_wholes(conn: sqlite3.Connection) -> bool:
    """Whether the index holds any long document (one lookup)."""
    return conn.execute(_QUERIES["any_wholes"]).fetchone() is not None


def settle(conn: sqlite3.Connection, chunk_hashes: Iterable[bytes]) -> None:
    """After a commit: the wholes with any of these chunks take their new state, and the documents
    whose whole is now done serve it."""
    chunk_hashes = list(chunk_hashes)
    if not chunk_hashes or not has_wholes(conn):
        return  # an index without long documents pays one lookup a commit
    _settling(conn)
    conn.executemany(_QUERIES["settle_wholes_of_chunk"], ((h,) for h in chunk_hashes))
    _apply(conn)


def _settle_wholes(conn: sqlite3.Connection, wholes: Iterable[bytes]) -> None:
    _settling(conn)
    conn.executemany(_QUERIES["settle_whole"], ((h,) for h in wholes))
    _apply(conn)


def _settling(conn: sqlite3.Connection) -> None:
    conn.execute(_QUERIES["create_settling"])
    conn.execute(_QUERIES["clear_settling"])


def _apply(conn: sqlite3.Connection) -> None:
    conn.execute(_QUERIES["settle"])
    conn.execute(_QUERIES["serve_settled"])


def broken_wholes(conn: sqlite3.Connection) -> list[tuple[bytes, str]]:
    """(whole, what is wrong) for every whole marked done with a chunk that is not done, or without
    its chunk list: `verify` reports them, `verify --repair` re-queues them."""
    return conn.execute(_QUERIES["broken_wholes"]).fetchall()
