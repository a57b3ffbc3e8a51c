"""Maintenance of the manifest: `verify --repair` (re-queueing bad vectors, recounting, recording
missing checksums) and `compact` (dropping contents nothing serves, moving slots, new chunk numbers)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from . import _counts
from ._connection import ManifestConnection
from ._queries import named_queries
from ._reports import MISNUMBERED, recount_rows
from ._sql import OWN_DONE

_QUERIES = named_queries("maintenance.sql")


class Maintenance(ManifestConnection):
    """The manifest's repairs and compaction; each runs in one write transaction."""

    def recount(self) -> None:
        """Set the kept counts from a recount of the rows, each document's content number from its
        hash first (`verify --repair`)."""
        with self._write() as conn:
            conn.execute(f"""UPDATE documents AS d SET seq = (SELECT seq FROM contents WHERE hash = d.hash)
                             {MISNUMBERED}""")
            conn.execute(_QUERIES["clear_counts"])
            conn.executemany(_QUERIES["insert_counts"],
                             ((state, *row) for state, row in recount_rows(conn).items()))

    def record_checksums(self, checksums: dict[int, bytes]) -> None:
        """Record checksums of chunks written before checksums were kept (verify --repair)."""
        with self._write() as conn:
            conn.executemany(_QUERIES["record_checksum"], checksums.items())

    def forget_chunks(self, chunks: Iterable[int]) -> None:
        """Drop the checksums of chunk files that are deleted (compact)."""
        with self._write() as conn:
            conn.executemany(_QUERIES["forget_checksum"], ((c,) for c in chunks))

    def requeue(self, hashes: Iterable[bytes], reason: str) -> int:
        """Send done contents whose vectors are bad back to pending (verify --repair). Their documents,
        and those of the long documents they are chunks of, stop serving the bad vector at once.
        Returns how many contents (and wholes) went back to pending."""
        hashes = list(hashes)
        with self._write() as conn:
            conn.execute(_QUERIES["create_requeued"])
            conn.execute(_QUERIES["clear_requeued"])
            conn.executemany(_QUERIES["add_requeued"], ((h,) for h in hashes))
            conn.execute(_QUERIES["add_wholes_of_requeued"])
            wholes = conn.execute(_QUERIES["requeue_wholes"]).rowcount
            conn.execute(_QUERIES["unserve_requeued"])
            contents = conn.execute(_QUERIES["requeue_contents"], (reason,)).rowcount
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
            chunk = int(conn.execute(_QUERIES["allocate_chunk"]).fetchone()[0])
            if callable(on_chunk):
                on_chunk(chunk)
            return chunk

    def move_slots(self, moves: Sequence[tuple[int, int]], checksums: dict[int, bytes],
                   emptied: Iterable[int]) -> None:
        """Repoint done contents from old to new slots in one transaction (compact), with the
        checksums of the new chunks; the `emptied` chunks lose theirs."""
        with self._write() as conn:
            conn.executemany(_QUERIES["record_checksum"], checksums.items())
            conn.executemany(_QUERIES["forget_checksum"], ((c,) for c in emptied))
            conn.execute(_QUERIES["create_slot_moves"])
            conn.execute(_QUERIES["clear_slot_moves"])
            conn.executemany(_QUERIES["add_slot_move"], moves)
            conn.execute(_QUERIES["unslot_moved"])
            conn.execute(_QUERIES["slot_moved"])
