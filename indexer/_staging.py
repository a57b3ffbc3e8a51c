"""Texts waiting to be embedded: the manifest's `staged` table (migrations/0009).

A content waiting to be embedded has one staged row holding its text, numbered in the order claims
take them; `contents.seq` points at it. A claim marks the first free rows with its id (`claim_id`) and
keeps their range (`claims.first_seq`..`last_seq`), so that freeing a claim's rows walks that range
only; a commit deletes the rows it embedded. A content that failed for good keeps its row, marked
`FAILED` (0, never a claim's id), for `sync --retry-failed`. These functions run inside the Manifest's
write transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from . import _counts
from ._sql import in_batches

FAILED = 0  # staged.claim_id of a content that failed for good


def stage_texts(conn: sqlite3.Connection, rows: Sequence[tuple[bytes, int, str, int]]) -> int:
    """Add the contents `rows` (hash, chars, text, truncated) not known yet, pending, their texts staged
    in claim order (shortest first, so that a claim holds similar lengths); stage again the text of a
    known pending content that lost its own (re-queued by `verify --repair`). Returns how many
    contents it added."""
    distinct = {h: (chars, text, cut) for h, chars, text, cut in rows}
    lost: list[bytes] = []
    known: set[bytes] = set()
    for part, marks in in_batches(list(distinct)):
        for h, lost_text in conn.execute(f"""SELECT hash, state = 'pending' AND parts = 0 AND seq IS NULL
                                             FROM contents WHERE hash IN ({marks})""", part):
            known.add(h)
            if lost_text:
                lost.append(h)
    new = [h for h in distinct if h not in known]
    order = sorted(new + lost, key=lambda h: (distinct[h][0], h))
    if not order:
        return 0
    first = int(conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM staged").fetchone()[0])
    seq_of = {h: first + i for i, h in enumerate(order)}
    conn.executemany("INSERT INTO staged (seq, hash, text) VALUES (?, ?, ?)",
                     ((seq_of[h], h, distinct[h][1]) for h in order))
    # In key order: consecutive inserts land on neighbouring pages of the hash-keyed table.
    conn.executemany("INSERT INTO contents (hash, chars, seq, truncated) VALUES (?, ?, ?, ?)",
                     sorted((h, distinct[h][0], seq_of[h], distinct[h][2]) for h in new))
    conn.executemany("UPDATE contents SET seq = ? WHERE hash = ?", ((seq_of[h], h) for h in sorted(lost)))
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
