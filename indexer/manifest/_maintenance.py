"""Maintenance of the manifest: `verify --repair` (re-queueing bad vectors, recounting, recording
missing checksums) and `compact` (dropping contents nothing serves, moving slots, new chunk numbers)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .._sql import OWN_DONE
from . import _counts
from ._connection import ManifestConnection
from ._reports import MISNUMBERED, recount_rows


class Maintenance(ManifestConnection):
    """The manifest's repairs and compaction; each runs in one write transaction."""

    def recount(self) -> None:
        """Set the kept counts from a recount of the rows, each document's content number from its
        hash first (`verify --repair`)."""
        with self._write() as conn:
            conn.execute(f"""UPDATE documents AS d SET seq = (SELECT seq FROM contents WHERE hash = d.hash)
                             {MISNUMBERED}""")
            conn.execute("DELETE FROM state_counts")
            conn.executemany("INSERT INTO state_counts VALUES (?, ?, ?, ?, ?)",
                             ((state, *row) for state, row in recount_rows(conn).items()))

    def record_checksums(self, checksums: dict[int, bytes]) -> None:
        """Record checksums of chunks written before checksums were kept (verify --repair)."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?)", checksums.items())

    def forget_chunks(self, chunks: Iterable[int]) -> None:
        """Drop the checksums of chunk files that are deleted (compact)."""
        with self._write() as conn:
            conn.executemany("DELETE FROM chunks WHERE chunk = ?", ((c,) for c in chunks))

    def requeue(self, hashes: Iterable[bytes], reason: str) -> int:
        """Send done contents whose vectors are bad back to pending (verify --repair). Their documents,
        and those of the long documents they are chunks of, stop serving the bad vector at once.
        Returns how many contents (and wholes) went back to pending."""
        hashes = list(hashes)
        with self._write() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS requeued (hash BLOB PRIMARY KEY) WITHOUT ROWID")
            conn.execute("DELETE FROM requeued")
            conn.executemany("INSERT OR IGNORE INTO requeued VALUES (?)", ((h,) for h in hashes))
            # The long documents made of them: not whole any more, not served until embedded again.
            conn.execute("""INSERT OR IGNORE INTO requeued SELECT whole FROM text_chunks
                            WHERE hash IN (SELECT hash FROM requeued)""")
            wholes = conn.execute("""UPDATE contents SET state = 'pending' WHERE parts > 0
                                     AND state = 'done' AND hash IN (SELECT hash FROM requeued)""").rowcount
            # One pass over documents: no index on ready_hash (commits would pay for it on every row).
            # Those whose own content goes back serve nothing either, not an older version.
            conn.execute("""UPDATE documents SET ready_hash = NULL
                WHERE ready_hash IN (SELECT hash FROM requeued) OR hash IN (SELECT hash FROM requeued)""")
            contents = conn.execute("""UPDATE contents SET state = 'pending', slot = NULL, error = ?
                WHERE hash IN (SELECT hash FROM requeued) AND state = 'done'""", (reason,)).rowcount
            return wholes + int(contents)

    def drop_unreferenced_contents(self) -> int:
        """Forget contents no live or served document points at (their slots become free)."""
        with self._write() as conn:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS kept (hash BLOB PRIMARY KEY) WITHOUT ROWID")
            conn.execute("DELETE FROM kept")
            # A live document whose own content is done serves it: the one it served before goes.
            conn.execute(f"""UPDATE documents AS d SET ready_hash = hash
                WHERE deleted = 0 AND ready_hash IS NOT hash AND {OWN_DONE}""")
            conn.execute("""INSERT OR IGNORE INTO kept SELECT hash FROM documents WHERE deleted = 0
                UNION ALL SELECT ready_hash FROM documents WHERE deleted = 0 AND ready_hash IS NOT NULL""")
            # The chunks of the long documents kept.
            conn.execute("""INSERT OR IGNORE INTO kept SELECT t.hash FROM text_chunks t
                            WHERE t.whole IN (SELECT hash FROM kept)""")
            # No live document has them (status counts: indexer/manifest/_counts.py), and no whole counts.
            # Nor does an active claim hold them (a claim left by a dead sync is freed by the next).
            unkept = """WHERE c.parts = 0 AND c.hash NOT IN (SELECT hash FROM kept)
                AND NOT EXISTS (SELECT 1 FROM staged s JOIN claims k ON k.id = s.claim_id
                                WHERE s.seq = c.seq AND k.state = 'active')"""
            for state, n in conn.execute(f"SELECT {_counts.BUCKET}, count(*) FROM contents c {unkept} "
                                         "GROUP BY 1").fetchall():
                _counts.add(conn, state, contents=-n)
            conn.execute(f"DELETE FROM staged WHERE seq IN (SELECT c.seq FROM contents c {unkept})")
            dropped = conn.execute(f"DELETE FROM contents AS c {unkept}").rowcount
            conn.execute("DELETE FROM contents WHERE parts > 0 AND hash NOT IN (SELECT hash FROM kept)")
            conn.execute("DELETE FROM text_chunks WHERE whole NOT IN (SELECT hash FROM kept)")
            # Deleted documents served those: forget it, so that one coming back never points at a
            # content that is gone, or that comes back later not done, without a slot.
            conn.execute("""UPDATE documents SET ready_hash = NULL WHERE ready_hash IS NOT NULL
                AND ready_hash NOT IN (SELECT hash FROM contents)""")
            # Nor by number: a number freed may be given to a new content (documents.seq, 0010).
            conn.execute("""UPDATE documents SET seq = NULL WHERE deleted != 0 AND seq IS NOT NULL
                AND seq NOT IN (SELECT seq FROM contents)""")
            return dropped

    def allocate_chunk(self, on_chunk: object = None) -> int:
        with self._write() as conn:
            chunk = int(conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'next_chunk' "
                                     "RETURNING value - 1").fetchone()[0])
            if callable(on_chunk):
                on_chunk(chunk)
            return chunk

    def move_slots(self, moves: Sequence[tuple[int, int]], checksums: dict[int, bytes],
                   emptied: Iterable[int]) -> None:
        """Repoint done contents from old to new slots in one transaction (compact), with the
        checksums of the new chunks; the `emptied` chunks lose theirs."""
        with self._write() as conn:
            conn.executemany("INSERT OR REPLACE INTO chunks VALUES (?, ?)", checksums.items())
            conn.executemany("DELETE FROM chunks WHERE chunk = ?", ((c,) for c in emptied))
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS slot_moves (old INTEGER PRIMARY KEY, new INTEGER)")
            conn.execute("DELETE FROM slot_moves")
            conn.executemany("INSERT INTO slot_moves VALUES (?, ?)", moves)
            # Two steps, so that UNIQUE(slot) never sees the same value twice mid-update.
            conn.execute("UPDATE contents SET slot = -1 - slot WHERE slot IN (SELECT old FROM slot_moves)")
            conn.execute("""UPDATE contents SET slot = (SELECT new FROM slot_moves WHERE old = -1 - slot)
                            WHERE slot < 0""")
