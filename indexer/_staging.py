"""Texts waiting to be embedded: the manifest's `staged` table (migrations/0009).

A content waiting to be embedded has one staged row holding its text, of the content's own number
(`contents.seq`, the order claims take them). A claim marks the first free rows with its id (`claim_id`) and
keeps their range (`claims.first_seq`..`last_seq`), so that freeing a claim's rows walks that range
only; a commit deletes the rows it embedded. A content that failed for good keeps its row, marked
`FAILED` (0, never a claim's id), for `sync --retry-failed`. These functions run inside the Manifest's
write transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

from . import _counts
from ._sql import in_batches

FAILED = 0  # staged.claim_id of a content that failed for good


def stage_texts(conn: sqlite3.Connection, rows: Sequence[tuple[bytes, int, str, int]]) -> int:
    """Add the contents `rows` (hash, chars, text, truncated) not known yet, pending, their texts staged
    in claim order (shortest first, so that a claim holds similar lengths); stage again the text of a
    known pending content that lost its own (re-queued by `verify --repair`). Returns how many
    contents it added."""
    distinct = {h: (chars, text, cut) for h, chars, text, cut in rows}
    seq_of: dict[bytes, int] = {}  # of the contents known, those whose text is lost
    known: set[bytes] = set()
    for part, marks in in_batches(list(distinct)):
        for h, seq, lost in conn.execute(f"""SELECT hash, seq, state = 'pending' AND parts = 0
                AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.seq = c.seq)
                FROM contents c WHERE hash IN ({marks})""", part):
            known.add(h)
            if lost:
                seq_of[h] = seq
    new = sorted((h for h in distinct if h not in known), key=lambda h: (distinct[h][0], h))
    if not new and not seq_of:
        return 0
    first = int(conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM contents").fetchone()[0])
    seq_of.update((h, first + i) for i, h in enumerate(new))
    # One statement for all the rows, not one a row (each opens and closes a statement journal).
    conn.execute("""INSERT INTO contents (seq, hash, chars, truncated) SELECT :first + key,
        substr(:hashes, key * 16 + 1, 16), value ->> 0, value ->> 1 FROM json_each(:rows)""",
                 {"first": first, "hashes": b"".join(new),
                  "rows": orjson.dumps([distinct[h][::2] for h in new])})
    conn.executemany("INSERT INTO staged (seq, hash, text) VALUES (?, ?, ?)",
                     sorted((seq, h, distinct[h][1]) for h, seq in seq_of.items()))
    _counts.add(conn, "pending", contents=len(new))
    return len(new)


def free_claimed(conn: sqlite3.Connection, claim_id: int) -> None:
    """The staged rows the claim still holds are free to claim again."""
    conn.execute("""UPDATE staged SET claim_id = NULL WHERE claim_id = ?1
                    AND seq BETWEEN (SELECT first_seq FROM claims WHERE id = ?1)
                    AND (SELECT last_seq FROM claims WHERE id = ?1)""", (claim_id,))


def claimed_count(conn: sqlite3.Connection) -> int:
    """Contents held by active claims."""
    return int(conn.execute("""SELECT count(*) FROM claims k JOIN staged s
        ON s.seq BETWEEN k.first_seq AND k.last_seq AND s.claim_id = k.id WHERE k.state = 'active'""")
        .fetchone()[0])
