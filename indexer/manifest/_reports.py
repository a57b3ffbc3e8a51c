"""What the manifest reports: the status counts (`status_counts`, checked against a recount by
`counts_problems`), the run log, failures, where done contents are, chunk checksums."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TypedDict

from .._owner import current_owner, owner_is_dead
from ..states import ContentState, DocumentState, RunState
from . import _counts, _staging, _wholes
from ._connection import ManifestConnection
from ._queries import named_queries

_QUERIES = named_queries("reports.sql")


class ContentCounts(TypedDict):
    """Distinct contents by state; `claimed` are pending contents a live claim holds."""
    pending: int
    claimed: int
    done: int
    failed: int


class LastRun(TypedDict):
    id: int
    state: str  # a RunState: "interrupted" where a running run's owner died
    started_at: float
    finished_at: float | None


class StatusCounts(TypedDict):
    """What `status_counts` reports: documents by the state of the content they are at (`deleted`
    apart), their chunks and truncated ones, contents by state, claims, the last run."""
    documents: int
    pending: int
    done: int
    failed: int
    deleted: int
    chunks: int
    truncated: int
    contents: ContentCounts
    active_claims: int
    fencing_refusals: int
    last_run: LastRun | None

# Documents whose content number (documents.seq, migrations/0010) is not that of the content with their
# hash: none, unless the file was changed by hand. A deleted document may have none: compact dropped
# its content (and a later scan may have added that text again, for another document).
MISNUMBERED = """WHERE d.seq IS NOT (SELECT c.seq FROM contents c WHERE c.hash = d.hash)
    AND (d.deleted = 0 OR d.seq IS NOT NULL)"""


class Reports(ManifestConnection):
    """The manifest's reports: read-only queries, and the run log a sync writes."""

    def start_run(self) -> int:
        with self._write() as conn:
            # A run whose owner died while 'running' was interrupted.
            for rid, owner in conn.execute(_QUERIES["running_runs"]).fetchall():
                if owner_is_dead(owner):
                    conn.execute(_QUERIES["mark_run_interrupted"], (rid,))
            rid = conn.execute(_QUERIES["insert_run"], (time.time(), current_owner())).lastrowid
            assert rid is not None
            return rid

    def finish_run(self, run_id: int, state: RunState, summary: dict[str, object]) -> None:
        with self._write() as conn:
            conn.execute(_QUERIES["finish_run"], (time.time(), state, json.dumps(summary), run_id))
        self.checkpoint()

    def status_counts(self) -> StatusCounts:
        """What `indexer status` reports, from one snapshot. The counts are read from `state_counts`
        (a few rows, kept with the rows they count: migrations/0008, indexer/manifest/_counts.py) where the
        manifest has it; a read-only manifest from before it is counted row by row."""
        with self._snapshot() as conn:
            counts = self._kept_counts(conn) if self._has_table("state_counts") else recount_rows(conn)
            # Claimed contents are kept with the pending ones; those in claims are few.
            claimed = (_staging.claimed_count(conn) if self._has_table("staged")
                       else conn.execute(_QUERIES["count_claimed_unstaged"]).fetchone()[0])
            active = conn.execute(_QUERIES["count_active_claims"]).fetchone()[0]
            refusals = conn.execute(_QUERIES["fencing_refusals"]).fetchone()[0]
            run = conn.execute(_QUERIES["last_run"]).fetchone() if self._has_table("runs") else None
        last_run: LastRun | None = None
        if run is not None:
            state = RunState.INTERRUPTED if run[1] == RunState.RUNNING and owner_is_dead(run[4]) else run[1]
            last_run = {"id": run[0], "state": state, "started_at": run[2], "finished_at": run[3]}
        return {
            "documents": sum(counts[s][1] for s in _COUNTED),
            "pending": counts[DocumentState.PENDING][1],
            "done": counts[DocumentState.DONE][1],
            "failed": counts[DocumentState.FAILED][1],
            "deleted": counts[DocumentState.DELETED][1],
            "chunks": sum(counts[s][2] for s in _COUNTED),
            "truncated": sum(counts[s][3] for s in _COUNTED),
            "contents": {"pending": counts[ContentState.PENDING][0] - claimed, "claimed": claimed,
                         "done": counts[ContentState.DONE][0], "failed": counts[ContentState.FAILED][0]},
            "active_claims": active,
            "fencing_refusals": refusals,
            "last_run": last_run,
        }

    @staticmethod
    def _kept_counts(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int, int]]:
        return {state: (contents, documents, chunks, truncated) for state, contents, documents, chunks,
                truncated in conn.execute(_QUERIES["kept_counts"])}

    def counts_problems(self) -> list[str]:
        """How the kept counts differ from a recount of the rows, in one snapshot (`verify`)."""
        if not self._has_table("state_counts"):
            return []
        with self._snapshot() as conn:
            kept, actual = self._kept_counts(conn), recount_rows(conn)
            misnumbered = conn.execute(f"SELECT count(*) FROM documents d {MISNUMBERED}").fetchone()[0]
        out = []
        if misnumbered:  # the counts and commits find documents by their content's number
            out.append(f"{misnumbered} document(s) point at their content by a number (documents.seq) "
                       "that is not its own")
        for state, counted in actual.items():
            for column, was, now in zip(_COUNT_COLUMNS, kept.get(state, (0, 0, 0, 0)), counted, strict=True):
                if was != now:
                    out.append(f"status counts: {column} of state {state} are kept as {was}, but the "
                               f"rows hold {now}")
        return out

    def failures(self, limit: int = 100) -> list[tuple[str, str]]:
        """(document id, reason) of live documents whose content failed."""
        return self.conn.execute(_QUERIES["failures"], (limit,)).fetchall()

    def done_slots(self) -> list[tuple[bytes, int]]:
        return self.conn.execute(_QUERIES["done_slots"]).fetchall()

    def broken_wholes(self) -> list[tuple[bytes, str]]:
        return _wholes.broken_wholes(self.conn)

    def done_slots_and_active_chunks(self) -> tuple[list[tuple[bytes, int]], set[int]]:
        """Both from one snapshot: a claim committed between two separate reads would be in neither."""
        with self._snapshot():
            return self.done_slots(), self.active_chunks()

    def chunk_checksums(self) -> dict[int, bytes]:
        """What `VectorStore.checksums_of` gave for each chunk when it was written (readers take the
        whole file's part through `_reads.chunk_file_checksums`)."""
        if not self._has_table("chunks"):
            return {}
        return dict(self.conn.execute(_QUERIES["chunk_checksums"]).fetchall())

    def active_chunks(self) -> set[int]:
        return {r[0] for r in self.conn.execute(_QUERIES["active_chunks"])}


    def pending_texts(self) -> tuple[int, int]:
        """(contents, characters) staged and waiting to be embedded."""
        count, chars = self.conn.execute(_QUERIES["pending_texts"]).fetchone()
        return int(count), int(chars)

    def integrity_check(self) -> str:
        return str(self.conn.execute("PRAGMA integrity_check").fetchone()[0])


_COUNTED = tuple(ContentState)  # the rows of state_counts for contents; claimed is in pending
_COUNT_COLUMNS = ("contents", "documents", "chunks", "truncated")


def recount_rows(conn: sqlite3.Connection) -> dict[str, tuple[int, int, int, int]]:
    """state -> (contents, documents, chunks, truncated) as `state_counts` keeps them
    (migrations/0008 says what each is), counted from the rows: documents by the state of the content
    with their hash (not by the content number the kept counts follow, which `counts_problems`
    checks apart)."""
    out: dict[str, list[int]] = {state: [0, 0, 0, 0] for state in DocumentState}
    for state, n in conn.execute(f"SELECT {_counts.BUCKET}, count(*) FROM contents c WHERE parts = 0 "
                                 "GROUP BY 1"):
        out[state][0] = n
    for state, *values in _counts.documents_by_state(
            conn, "FROM documents d JOIN contents c ON c.hash = d.hash WHERE d.deleted = 0"):
        out[state][1:] = values
    deleted = conn.execute("SELECT count(*) FROM documents WHERE deleted != 0").fetchone()[0]
    out[DocumentState.DELETED][1] = deleted
    return {state: (a, b, c, d) for state, (a, b, c, d) in out.items()}
