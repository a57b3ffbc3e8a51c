"""Claims: leases on the free staged texts, each with a fresh chunk and a token (`claim_many`);
renewals, releases and the expiry of claims whose lease ran out or whose owner died; commits fenced
by the token (`commit_many`), refusals counted; `retry_failed`."""

from __future__ import annotations

import contextlib
import itertools
import secrets
import sqlite3
import time
from collections.abc import Iterable, Sequence

import orjson

from .._faults import crash_point
from .._owner import current_owner, owner_is_dead
from ..errors import LeaseLostError
from ..states import ClaimState, ContentState
from . import _counts, _staging, _wholes
from ._connection import ManifestConnection
from ._queries import named_queries
from ._records import Claim, Finished
from ._staging import free_claimed

_QUERIES = named_queries("claims.sql")


class Claims(ManifestConnection):
    """The claims' role of the manifest: what the embed phase's driver and workers call."""

    def _expire_claims(self, conn: sqlite3.Connection, now: float) -> int:
        active = conn.execute(_QUERIES["active_claims"]).fetchall()
        me = current_owner()
        # This process is alive: asking the OS about each of its own claims cost one call per claim in
        # flight, on every claim.
        dead = [cid for cid, owner, expires in active
                if expires < now or (owner != me and owner_is_dead(owner))]
        for cid in dead:
            conn.execute(_QUERIES["expire_claim"], (cid,))
            free_claimed(conn, cid)
        return len(dead)

    def expire_claims(self) -> int:
        """Return expired claims and claims of dead local owners to pending; how many were active."""
        with self._write() as conn:
            self._expire_claims(conn, time.time())
            return int(conn.execute(_QUERIES["count_active_claims"]).fetchone()[0])

    def prepare_for_claims(self) -> None:
        """Tune this connection for a run of claims and commits, whose commits rewrite documents
        spread over the whole file (keyed by id, found by their content's hash).
        A larger page cache keeps those pages between claims; a rarer checkpoint writes a page that
        many commits changed back to the database once (and fsyncs once). The price: a WAL of up to
        `Settings.wal_limit_mib` on disk while the sync runs (it ends emptied: `finish_run`), and a
        power cut (not a crash) may return more of the last commits to pending."""
        self._grow_page_cache()
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {self._wal_pages}")

    def claim(self, limit: int, owner: str | None = None, on_chunk: object = None) -> Claim | None:
        """Lease up to `limit` pending contents of similar length and give them one fresh chunk.

        `on_chunk(chunk)` runs inside the write transaction: the store grows its shape there, so that
        two processes never rewrite the array's metadata at once.
        """
        claims = self.claim_many(limit, 1, owner, on_chunk)
        return claims[0] if claims else None

    def claim_many(self, limit: int, count: int, owner: str | None = None,
                   on_chunk: object = None) -> list[Claim]:
        """Up to `count` claims of up to `limit` contents each (each its own fresh chunk, lease and
        token), in one transaction: the first free staged texts, consecutive in claim order. One
        transaction for many claims writes each page they share to the log once.

        `on_chunk(last chunk)` runs inside the write transaction (see `claim`)."""
        now = time.time()
        claims: list[Claim] = []
        try:
            with self._write() as conn:
                self._expire_claims(conn, now)
                seqs, hashes, texts = self._free_texts(conn, limit * count)
                if not seqs:
                    return []
                starts = range(0, len(seqs), limit)
                first = conn.execute(_QUERIES["take_chunks"], (len(starts), len(starts))).fetchone()[0]
                owner = owner or current_owner()
                for n, i in enumerate(starts):
                    token = secrets.token_hex(16)
                    part = slice(i, i + limit)
                    lo, hi = seqs[i], seqs[part][-1]
                    expires = now + self.settings.lease_seconds
                    cid = conn.execute(_QUERIES["insert_claim"],
                                       (token, owner, first + n, expires, lo, hi)).lastrowid
                    assert cid is not None
                    # The free rows from lo to hi are this part's: the first free ones, in order.
                    conn.execute(_QUERIES["mark_claimed"], (cid, lo, hi))
                    claims.append(Claim(cid, token, first + n, hashes[part], texts[part], seqs[part]))
                if callable(on_chunk):
                    on_chunk(first + len(starts) - 1)
        except BaseException:
            # Ctrl-C can land just after COMMIT, before the caller ever sees the claims: give them back
            # (a no-op when the transaction was rolled back instead).
            if claims and not self.conn.in_transaction:
                for claim in claims:
                    with contextlib.suppress(Exception):
                        self.release(claim)
            raise
        return claims

    def _free_texts(self, conn: sqlite3.Connection, limit: int
                    ) -> tuple[list[int], list[bytes], list[str]]:
        """Up to `limit` free staged texts, in claim order: their numbers, hashes and texts, what a
        claim reads."""
        # One row of whole columns: a row a text would hand the GIL over twice per text, and the chunk
        # writer threads, running meanwhile, take it each time. Lengths in bytes: length() of a text
        # stops at a NUL, a byte a text may hold.
        seqs, hashes, sizes, joined = conn.execute(_QUERIES["free_texts"], (limit,)).fetchone()
        if seqs is None:
            return [], [], []
        numbers = [int(seq) for seq in seqs.split(",")]
        digests = bytes.fromhex(hashes)
        ends = list(itertools.accumulate(map(int, sizes.split(","))))
        texts = [joined[start:end].decode("utf-8") for start, end in zip([0, *ends[:-1]], ends, strict=True)]
        keys = [digests[i:i + 16] for i in range(0, len(digests), 16)]
        if numbers != sorted(numbers):  # (they come in order; never trust it)
            order = sorted(range(len(numbers)), key=numbers.__getitem__)
            numbers, keys = [numbers[i] for i in order], [keys[i] for i in order]
            texts = [texts[i] for i in order]
        return numbers, keys, texts

    def renew(self, claim: Claim) -> None:
        """Extend the claim's lease. Raises LeaseLostError (a fencing refusal) if it was taken over."""
        try:
            with self._write() as conn:
                self._check_token(conn, claim)
                conn.execute(_QUERIES["renew_lease"], (time.time() + self.settings.lease_seconds, claim.id))
        except LeaseLostError:
            with self._write() as conn:
                _count_refusals(conn, 1)
            raise

    def _check_token(self, conn: sqlite3.Connection, claim: Claim) -> None:
        row = conn.execute(_QUERIES["claim_token"], (claim.id,)).fetchone()
        if row is None or row[0] != claim.token or row[1] != ClaimState.ACTIVE:
            state = "gone" if row is None else row[1]
            raise LeaseLostError(f"claim {claim.id} (chunk {claim.chunk}) is {state}: its lease expired "
                                 "and its contents went back to pending; this worker's result is dropped")

    def commit(self, claim: Claim, done: Iterable[tuple[bytes, int]],
               failed: Iterable[tuple[bytes, str]] = (), checksum: bytes | None = None) -> int:
        """Mark `done` (hash, slot) pairs done and count `failed` (hash, reason) attempts, in one
        transaction, only if the claim's token still matches (fencing). Raises LeaseLostError if not.
        `checksum` is that of the claim's chunk file, recorded with its rows. The claim's other contents
        (the backend failed them, not their text) go back to pending without an attempt.
        Returns how many failed contents ran out of attempts and are now `failed`."""
        (result,) = self.commit_many([Finished(claim, list(done), list(failed), checksum)])
        if isinstance(result, LeaseLostError):
            raise result
        return result

    def commit_many(self, finished: Sequence[Finished]) -> list[int | LeaseLostError]:
        """`commit` for several claims in one transaction (so that a page their rows share is logged
        once). Each claim is fenced alone: one whose token no longer matches is refused (its
        LeaseLostError returned in its place, counted in `meta.fencing_refusals`), the others commit.
        Returns, claim by claim, how many failed contents ran out of attempts, or the refusal."""
        refused: dict[int, LeaseLostError] = {}  # position in `finished` -> its refusal
        with self._write() as conn:
            fenced: list[Finished] = []
            for i, f in enumerate(finished):
                try:
                    self._check_token(conn, f.claim)
                    fenced.append(f)
                except LeaseLostError as exc:
                    refused[i] = exc
            if refused:
                _count_refusals(conn, len(refused))
            conn.executemany(_QUERIES["record_checksum"],
                             [(f.claim.chunk, f.checksum) for f in fenced if f.checksum is not None])
            # In claim order: consecutive statements land on neighbouring pages of staged and contents.
            seq_of = {h: seq for f in fenced for h, seq in zip(f.claim.hashes, f.claim.seqs, strict=True)}
            done = sorted((seq_of[h], h) for f in fenced for h, _ in f.done)
            for f in fenced:
                # The claim's rows not done (failed, by their text or by the backend) are free again
                # (those out of attempts are marked failed below); its other rows, done, all go.
                done_here = {h for h, _ in f.done}
                free = [seq_of[h] for h in f.claim.hashes if h not in done_here]
                if free:
                    conn.execute(_QUERIES["free_rows_not_done"], (orjson.dumps(free), f.claim.id))
                if f.done:
                    params = _done_rows(f, seq_of)
                    conn.execute(_QUERIES["delete_done_staged"], params)
                    conn.execute(_QUERIES["mark_contents_done"], params)
            hashes = sorted(h for _, h in done)
            seqs = [seq for seq, _ in done]
            # Their documents serve them from now on (migrations/0011: no document row changes).
            live = conn.execute(_QUERIES["count_live_documents_of"], (orjson.dumps(seqs),)).fetchone()[0]
            _counts.commit_done(conn, seqs, live)
            gave_up = dict.fromkeys((f.claim.id for f in fenced), 0)
            for f in fenced:
                for h, reason in f.failed:
                    row = conn.execute(_QUERIES["count_failed_attempt"],
                                       (h, reason, self.settings.retry_attempts, seq_of[h])).fetchone()
                    if row is not None and row[0] == ContentState.FAILED:
                        gave_up[f.claim.id] += 1
                        conn.execute(_QUERIES["mark_staged_failed"], (_staging.FAILED, seq_of[h]))
            # Long documents whose last chunk this was are served now (or failed, with it).
            _wholes.settle(conn, hashes + [h for f in fenced for h, _ in f.failed])
            crash_point("mid-commit")
            conn.executemany(_QUERIES["mark_committed"], ((f.claim.id,) for f in fenced))
        return [refused[i] if i in refused else gave_up[f.claim.id] for i, f in enumerate(finished)]

    def release(self, claim: Claim) -> None:
        """Give a claim's contents back to pending (Ctrl-C, a worker that gave up)."""
        with self._write() as conn:
            cur = conn.execute(_QUERIES["release_claim"], (claim.id, claim.token))
            if cur.rowcount:
                free_claimed(conn, claim.id)

    def retry_failed(self) -> int:
        with self._write() as conn:
            conn.execute(_QUERIES["retry_failed_wholes"])
            conn.execute(_QUERIES["unmark_staged_failed"], (_staging.FAILED,))
            return conn.execute(_QUERIES["retry_failed_contents"]).rowcount


def _done_rows(finished: Finished, seq_of: dict[bytes, int]) -> dict[str, object]:
    """The parameters of delete_done_staged and mark_contents_done (sql/claims.sql) for a claim's
    rows done (their slots are its chunk's)."""
    first = min(slot for _, slot in finished.done)
    seqs: list[int | None] = [None] * (max(slot for _, slot in finished.done) - first + 1)
    hashes = bytearray(16 * len(seqs))
    for h, slot in finished.done:
        seqs[slot - first] = seq_of[h]
        hashes[16 * (slot - first):16 * (slot - first + 1)] = h
    return {"seqs": orjson.dumps(seqs), "hashes": bytes(hashes), "first": first, "claim": finished.claim.id,
            "lo": finished.claim.seqs[0], "hi": finished.claim.seqs[-1]}


def _count_refusals(conn: sqlite3.Connection, n: int) -> None:
    """`n` more fencing refusals (a renew or commit of a claim taken over), for `status`."""
    conn.execute(_QUERIES["count_refusals"], (n,))
