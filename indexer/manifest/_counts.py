"""The status counts (`state_counts`, migrations/0008), kept in the transactions that change them.

A content changing state (failures, retries, repairs, wholes settling) is counted by the trigger
(0008, redefined by 0009): those transactions touch few rows, and the trigger keeps every such path
exact. A commit marks thousands of contents done at once and counts them together (`commit_done`,
with the documents its own update served).
The scan, delete-missing and compact add, change and drop rows by the thousand; a trigger there would
cost a few statements a row (it doubled a scan's SQL time, bench/RESULTS.md), so they count once per
statement with the functions below, inside their own write transactions. A content 'claimed' (a
state only a manifest from before 0009 holds, read as it is) counts with the pending ones
(`BUCKET`). These functions run inside the Manifest's transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import orjson

from ..states import ContentState, DocumentState
from ._queries import named_queries

if TYPE_CHECKING:
    from ._staging import Content

_QUERIES = named_queries("counts.sql")

# The row of state_counts a content's state is counted in.
BUCKET = "CASE c.state WHEN 'claimed' THEN 'pending' ELSE c.state END"
# Live documents d joined to their content c by state, after a query's FROM and WHERE (GROUP BY 1).
_BY_STATE = f"SELECT {BUCKET}, count(*), sum(max(c.parts, 1)), sum(c.truncated)"


def documents_by_state(conn: sqlite3.Connection, from_where: str) -> list[tuple[str, int, int, int]]:
    """(state, documents, chunks, truncated) of the documents `from_where` selects (`c` their
    contents)."""
    return conn.execute(f"{_BY_STATE} {from_where} GROUP BY 1").fetchall()


def add_documents(conn: sqlite3.Connection, rows: Iterable[tuple[str, int, int, int]], sign: int = 1) -> None:
    conn.executemany(_QUERIES["add_documents"],
                     [(state, sign * n, sign * chunks, sign * cut) for state, n, chunks, cut in rows])


def add(conn: sqlite3.Connection, state: str, contents: int = 0, documents: int = 0) -> None:
    if contents or documents:
        conn.execute(_QUERIES["add"], (contents, documents, state))


# A scan batch's new and changed documents: `items i` (its WITH clause) whose key is in :todo.
_TODO = "WHERE i.key IN (SELECT value FROM json_each(:todo))"


def batch_leaves(conn: sqlite3.Connection, items: str, params: Mapping[str, object]) -> None:
    """Before a scan batch's upsert: its documents leave the counts of what they are now (deleted, or
    live with their current content; a new one nothing). A deleted document's content may be gone
    (compact drops it): hence the outer join."""
    rows = conn.execute(f"""{items}SELECT iif(d.deleted != 0, 'deleted', {BUCKET}), count(*),
        sum(max(c.parts, 1)), sum(c.truncated) FROM items i JOIN documents d USING (id)
        LEFT JOIN contents c ON c.hash = d.hash {_TODO} GROUP BY 1""", params).fetchall()
    add_documents(conn, [row for row in rows if row[0] != DocumentState.DELETED], sign=-1)
    deleted = sum(row[1] for row in rows if row[0] == DocumentState.DELETED)
    add(conn, DocumentState.DELETED, documents=-deleted)


def batch_enters(conn: sqlite3.Connection, contents: Iterable[Content]) -> None:
    """After the upsert: the batch's documents, live now, count with their new `contents` (one each)."""
    entering: dict[str, list[int]] = {}
    for _, state, parts, cut in contents:
        row = entering.setdefault(state, [0, 0, 0])
        row[0] += 1
        row[1] += max(parts, 1)
        row[2] += cut
    add_documents(conn, [(state, n, chunks, cut) for state, (n, chunks, cut) in entering.items()])


def commit_done(conn: sqlite3.Connection, seqs: Sequence[int], documents: int) -> None:
    """A commit marked the plain contents numbered `seqs`, pending until then, done:
    they and the `documents` live documents that have them move from pending to done (the trigger
    leaves the commit's rows alone: they get their slot in the same statement)."""
    truncated = 0
    if conn.execute(_QUERIES["pending_truncated"]).fetchone()[0]:
        # (only an index that does not chunk truncates)
        truncated = conn.execute(_QUERIES["count_truncated_documents_of"],
                                 (orjson.dumps(list(seqs)),)).fetchone()[0]
    for state, sign in ((ContentState.PENDING, -1), (ContentState.DONE, 1)):
        add(conn, state, contents=sign * len(seqs))
        add_documents(conn, [(state, documents, documents, truncated)], sign=sign)
