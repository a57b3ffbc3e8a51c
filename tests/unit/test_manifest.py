"""The manifest on its own: content hashing, scan upserts, and leased, fenced claims.

Two `Manifest` objects on one file stand for two workers (each its own SQLite connection). A lease
"running out" is simulated by moving the claim's expiry into the past in the manifest itself: no sleeping.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import xxhash

from indexer._owner import _owner_of, current_owner, owner_is_dead
from indexer.errors import LeaseLostError, ManifestError
from indexer.manifest import Claim, Finished, Inspection, Manifest, ScanCounts, content_hash
from indexer.settings import Settings
from indexer.sources import Record, Skip
from indexer.states import RunState

from manifest_surgery import Tamper

SETTINGS = Settings(chunk_rows=4, scan_batch=16, retry_attempts=3, lease_seconds=600.0)
REMOTE_A = "some-other-host|1234|1.000"  # a worker on another machine: never seen as dead from here
REMOTE_B = "some-other-host|5678|2.000"


def records(docs: dict[str, str]) -> list[Record | Skip]:
    return [Record(k, v, f"test:{n}") for n, (k, v) in enumerate(docs.items(), 1)]


def scan(m: Manifest, docs: dict[str, str], **kw: object) -> ScanCounts:
    counts = ScanCounts()
    m.begin_scan()
    m.scan_batch(records(docs), counts, **kw)  # type: ignore[arg-type]
    return counts


def look(m: Manifest) -> Inspection:
    """Reads of `m`'s rows, through its own connection (its open transaction's writes included)."""
    return Inspection(m.conn)


def content_states(m: Manifest) -> dict[bytes, str]:
    """Each content's state; 'claimed' where an active claim holds its staged text."""
    return look(m).content_states()


def expire(m: Manifest, claim: Claim) -> None:
    """The claim's lease ran out (as if its worker stalled past lease_seconds)."""
    Tamper(m.conn).set_claim_expiry(claim.id, 0)


def commit_all(m: Manifest, claim: Claim) -> int:
    return m.commit(claim, [(h, claim.chunk * 4 + i) for i, h in enumerate(claim.hashes)])


@pytest.fixture
def manifest(tmp_path: Path) -> Iterator[Manifest]:
    m = Manifest(tmp_path / "manifest.sqlite", SETTINGS, create=True)
    yield m
    m.close()


def second_worker(m: Manifest) -> Manifest:
    return Manifest(m.path, m.settings)


# -- hashing and scan -----------------------------------------------------------------------------

def test_content_hash_is_xxh3_128_of_utf8() -> None:
    text = "héllo wörld ✓ 漢字"
    h = content_hash(text)
    assert h == xxhash.xxh3_128_digest(text.encode("utf-8"))
    assert len(h) == 16
    assert h != xxhash.xxh3_128_digest(text.encode("utf-16-le"))
    assert content_hash("a") != content_hash("a ")


def test_manifest_stores_the_content_hash_of_each_document(manifest: Manifest) -> None:
    scan(manifest, {"a": "alpha", "b": "bêta"})
    rows = {i: d.hash for i, d in look(manifest).documents().items()}
    assert rows == {"a": xxhash.xxh3_128_digest(b"alpha"),
                    "b": xxhash.xxh3_128_digest("bêta".encode())}


def test_scan_new_changed_unchanged(manifest: Manifest) -> None:
    c = scan(manifest, {"a": "one", "b": "two", "c": "three"})
    assert (c.scanned, c.new, c.changed, c.unchanged, c.to_embed) == (3, 3, 0, 0, 3)
    claim = manifest.claim(10)
    assert claim is not None
    commit_all(manifest, claim)
    assert set(content_states(manifest).values()) == {"done"}

    c = scan(manifest, {"a": "one", "b": "two, edited", "c": "three"})
    assert (c.scanned, c.new, c.changed, c.unchanged, c.to_embed) == (3, 0, 1, 2, 1)
    states = content_states(manifest)
    assert states[content_hash("two, edited")] == "pending"
    assert states[content_hash("one")] == states[content_hash("three")] == "done"
    # the changed document still serves its old content until the new one is done
    b = look(manifest).documents()["b"]
    assert (b.hash, b.ready_hash) == (content_hash("two, edited"), content_hash("two"))


def test_identical_texts_share_one_content(manifest: Manifest) -> None:
    c = scan(manifest, {"a": "same text", "b": "same text", "c": "other"})
    assert (c.new, c.to_embed) == (3, 2)
    assert len(look(manifest).contents()) == 2
    claim = manifest.claim(10)
    assert claim is not None and sorted(claim.texts) == ["other", "same text"]
    commit_all(manifest, claim)
    slots = look(manifest).slots_of(["a", "b", "c"])
    assert slots["a"] == slots["b"] != slots["c"]


def test_staged_text_is_dropped_when_done(manifest: Manifest) -> None:
    scan(manifest, {"a": "some text"})
    [content] = look(manifest).contents().values()
    seq = content.seq
    assert [(s.seq, s.text) for s in look(manifest).staged()] == [(seq, "some text")]
    claim = manifest.claim(4)
    assert claim is not None and claim.seqs == [seq]
    commit_all(manifest, claim)
    assert look(manifest).staged() == []


def test_dry_run_scan_writes_nothing(manifest: Manifest) -> None:
    c = scan(manifest, {"a": "x", "b": "y"}, dry_run=True)
    assert (c.new, c.to_embed) == (2, 2)
    assert look(manifest).documents() == {}
    assert look(manifest).contents() == {}


def test_duplicate_ids_keep_the_first(manifest: Manifest) -> None:
    counts = ScanCounts()
    manifest.begin_scan()
    manifest.scan_batch([Record("a", "first", "f:1"), Record("a", "second", "f:2")], counts)
    manifest.scan_batch([Record("a", "third", "f:3")], counts)
    assert counts.duplicates == 2 and counts.scanned == 1
    assert look(manifest).documents()["a"].hash == content_hash("first")
    assert any("f:2" in w and "f:1" in w for w in counts.warnings)


def test_a_duplicate_from_an_earlier_batch_names_where_it_was_first_seen(manifest: Manifest) -> None:
    """The first sighting is kept as an ordinal; its "file:line" is made from the batch's places, also
    for ids holding NUL (which SQLite's JSON functions cannot carry) and for a skipped record's id."""
    counts = ScanCounts()
    manifest.begin_scan()
    manifest.scan_batch([Record("a", "x", "f.jsonl", 1), Record("n\x00ul", "y", "f.jsonl", 2),
                         Skip("f.jsonl:3", "empty text", "s"), Record("p", "z", "f.parquet row 4")], counts)
    manifest.scan_batch([Record("n\x00ul", "y2", "g.jsonl", 7), Record("b", "w", "g.jsonl", 8),
                         Record("a", "x2", "g.jsonl", 9), Record("s", "v", "g.jsonl", 10),
                         Record("p", "u", "g.jsonl", 11)], counts)
    assert counts.duplicates == 4 and counts.scanned == 4
    assert [w for w in counts.warnings if "duplicate" in w] == [
        "g.jsonl:7: skipped: duplicate id 'n\\x00ul', first seen at f.jsonl:2; the first is kept",
        "g.jsonl:9: skipped: duplicate id 'a', first seen at f.jsonl:1; the first is kept",
        "g.jsonl:10: skipped: duplicate id 's', first seen at f.jsonl:3; the first is kept",
        "g.jsonl:11: skipped: duplicate id 'p', first seen at f.parquet row 4; the first is kept"]
    hashes = {i: d.hash for i, d in look(manifest).documents().items()}
    assert hashes == {"a": content_hash("x"), "n\x00ul": content_hash("y"), "p": content_hash("z"),
                      "b": content_hash("w")}


def test_delete_missing_and_skipped_known_id(manifest: Manifest) -> None:
    scan(manifest, {"a": "x", "b": "y", "c": "z"})
    counts = ScanCounts()
    manifest.begin_scan()
    # "b" is in the source but its text is unusable: present, so not missing
    manifest.scan_batch([Record("a", "x", "f:1"), Skip("f:2", "empty text", "b")], counts)
    assert manifest.missing_ids_count() == 1
    assert manifest.delete_missing() == 1
    deleted = {i: d.deleted for i, d in look(manifest).documents().items()}
    assert deleted == {"a": 0, "b": 0, "c": 1}


# -- claims ---------------------------------------------------------------------------------------

def test_claim_is_leased_to_its_owner(manifest: Manifest) -> None:
    scan(manifest, {f"d{i}": f"text {i}" for i in range(6)})
    before = time.time()
    claim = manifest.claim(4)
    after = time.time()
    assert claim is not None and len(claim.hashes) == 4 == len(claim.texts)
    assert [content_hash(t) for t in claim.texts] == claim.hashes
    row = look(manifest).claims()[claim.id]
    assert (row.token, row.owner, row.chunk, row.state) == (claim.token, current_owner(), claim.chunk,
                                                            "active")
    assert before + SETTINGS.lease_seconds <= row.expires_at <= after + SETTINGS.lease_seconds
    claimed = [s.hash for s in look(manifest).staged() if s.claim_id == claim.id]
    assert sorted(claimed) == sorted(claim.hashes)
    assert manifest.status_counts()["active_claims"] == 1


def test_claim_takes_similar_lengths_together(manifest: Manifest) -> None:
    texts = ["x" * n for n in (50, 3, 40, 1, 30, 2, 60, 4)]
    scan(manifest, {f"d{i}": t for i, t in enumerate(texts)})
    first = manifest.claim(4)
    second = manifest.claim(4)
    assert first is not None and second is not None
    assert sorted(map(len, first.texts)) == [1, 2, 3, 4]
    assert sorted(map(len, second.texts)) == [30, 40, 50, 60]


def test_each_claim_gets_its_own_fresh_chunk(manifest: Manifest) -> None:
    scan(manifest, {f"d{i}": f"text {i}" for i in range(10)})
    seen: list[int] = []
    grown: list[int] = []
    claims = []
    while (c := manifest.claim(4, on_chunk=grown.append)) is not None:
        claims.append(c)
        seen.append(c.chunk)
    assert len(claims) == 3 and sum(len(c.hashes) for c in claims) == 10
    assert len(set(seen)) == 3 and grown == seen
    # a released claim's chunk is never handed out again: the next claim gets a new one
    manifest.release(claims[0])
    again = manifest.claim(4)
    assert again is not None and again.chunk not in seen
    # no two claims, whatever their state, share a chunk
    chunks = [c.chunk for c in look(manifest).claims().values()]
    assert len(chunks) == len(set(chunks)) == 4
    all_hashes = [h for c in [*claims[1:], again] for h in c.hashes]
    assert len(all_hashes) == len(set(all_hashes)) == 10


def test_release_returns_contents_to_pending(manifest: Manifest) -> None:
    scan(manifest, {"a": "x", "b": "y"})
    claim = manifest.claim(4)
    assert claim is not None
    assert set(content_states(manifest).values()) == {"claimed"}
    manifest.release(claim)
    assert set(content_states(manifest).values()) == {"pending"}
    assert look(manifest).claims()[claim.id].state == "released"
    with pytest.raises(LeaseLostError):
        commit_all(manifest, claim)  # a released claim cannot commit either


def test_expired_lease_returns_contents_to_pending(manifest: Manifest) -> None:
    scan(manifest, {"a": "x", "b": "y"})
    claim = manifest.claim(4, owner=REMOTE_A)
    assert claim is not None
    assert manifest.expire_claims() == 1  # lease still running: nothing changes
    assert set(content_states(manifest).values()) == {"claimed"}
    expire(manifest, claim)
    assert manifest.expire_claims() == 0
    assert set(content_states(manifest).values()) == {"pending"}
    assert look(manifest).claims()[claim.id].state == "expired"


def test_live_remote_lease_is_not_taken_over(manifest: Manifest) -> None:
    scan(manifest, {"a": "x"})
    assert manifest.claim(4, owner=REMOTE_A) is not None
    other = second_worker(manifest)
    try:
        assert other.claim(4, owner=REMOTE_B) is None
    finally:
        other.close()


def test_stale_commit_is_fenced(manifest: Manifest) -> None:
    scan(manifest, {"a": "x", "b": "y"})
    stale = manifest.claim(4, owner=REMOTE_A)
    assert stale is not None
    expire(manifest, stale)  # worker A stalled past its lease ...
    other = second_worker(manifest)
    try:
        fresh = other.claim(4, owner=REMOTE_B)  # ... and worker B took the contents over
        assert fresh is not None and sorted(fresh.hashes) == sorted(stale.hashes)
        assert fresh.token != stale.token and fresh.chunk != stale.chunk

        with pytest.raises(LeaseLostError, match=f"claim {stale.id}"):
            commit_all(manifest, stale)
        # A's commit changed nothing: the contents are still B's
        contents = {c.seq: c for c in look(manifest).contents().values()}
        rows = [(contents[s.seq].state, s.claim_id, contents[s.seq].slot) for s in look(manifest).staged()
                if s.seq in contents]
        assert rows == [("pending", fresh.id, None)] * 2
        assert manifest.status_counts()["fencing_refusals"] == 1

        with pytest.raises(LeaseLostError):
            manifest.renew(stale)
        assert manifest.status_counts()["fencing_refusals"] == 2

        commit_all(other, fresh)
        slots = sorted(((c.state, c.slot) for c in look(manifest).contents().values()),
                       key=lambda row: (row[1] is not None, row[1]))
        assert slots == [("done", fresh.chunk * 4), ("done", fresh.chunk * 4 + 1)]
    finally:
        other.close()


def test_renew_extends_the_lease(manifest: Manifest) -> None:
    scan(manifest, {"a": "x"})
    claim = manifest.claim(4, owner=REMOTE_A)
    assert claim is not None
    # nearly run out
    Tamper(manifest.conn).set_claim_expiry(claim.id, time.time() + 5)
    manifest.renew(claim)
    expires = look(manifest).claims()[claim.id].expires_at
    assert expires > time.time() + SETTINGS.lease_seconds / 2
    commit_all(manifest, claim)
    assert set(content_states(manifest).values()) == {"done"}


def test_claim_of_a_dead_local_process_is_reclaimed_at_once(manifest: Manifest) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        dead_owner = _owner_of(child.pid)
        assert not owner_is_dead(dead_owner)
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert owner_is_dead(dead_owner)
    scan(manifest, {"a": "x", "b": "y"})
    orphan = manifest.claim(4, owner=dead_owner)
    assert orphan is not None
    # its lease runs for another ten minutes, but its owner is gone: the next claim takes it over
    fresh = manifest.claim(4)
    assert fresh is not None and sorted(fresh.hashes) == sorted(orphan.hashes)
    assert look(manifest).claims()[orphan.id].state == "expired"


def test_failures_count_attempts_then_fail_and_retry(manifest: Manifest) -> None:
    scan(manifest, {"bad": "bad text", "good": "good text"})
    bad = content_hash("bad text")
    for attempt in range(1, SETTINGS.retry_attempts + 1):
        claim = manifest.claim(4)
        assert claim is not None and bad in claim.hashes
        done = [(h, claim.chunk * 4 + i) for i, h in enumerate(claim.hashes) if h != bad]
        gave_up = manifest.commit(claim, done, [(bad, f"boom {attempt}")])
        assert gave_up == (attempt == SETTINGS.retry_attempts)
    assert manifest.claim(4) is None  # failed for good: not claimed again
    row = look(manifest).contents()[bad]
    assert (row.state, row.attempts, row.error) == ("failed", 3, "boom 3")
    assert manifest.failures() == [("bad", "boom 3")]
    counts = manifest.status_counts()
    assert (counts["done"], counts["failed"], counts["pending"]) == (1, 1, 0)

    assert manifest.retry_failed() == 1
    claim = manifest.claim(4)
    assert claim is not None and claim.hashes == [bad]


def test_status_counts(manifest: Manifest) -> None:
    scan(manifest, {"a": "x", "b": "x", "c": "y"})
    counts = manifest.status_counts()
    assert (counts["documents"], counts["pending"], counts["done"], counts["deleted"]) == (3, 3, 0, 0)
    assert counts["contents"] == {"pending": 2, "claimed": 0, "done": 0, "failed": 0}


def test_opening_a_missing_manifest_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="does not exist"):
        Manifest(tmp_path / "nope.sqlite", SETTINGS)
    assert not (tmp_path / "nope.sqlite").exists()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "manifest.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ManifestError, match="not a readable manifest"):
        Manifest(bad, SETTINGS)


def test_claim_many_takes_consecutive_lengths_in_one_chunk_each(manifest: Manifest) -> None:
    docs = {f"d{i}": "w" * (10 + i) for i in range(10)}  # lengths 10..19
    scan(manifest, docs)
    grown: list[int] = []
    claims = manifest.claim_many(4, 3, owner=REMOTE_A, on_chunk=grown.append)
    assert [len(c.hashes) for c in claims] == [4, 4, 2]
    assert [c.chunk for c in claims] == [0, 1, 2] and grown == [2]  # the store grows once, to the last
    assert [len(t) for c in claims for t in c.texts] == list(range(10, 20))  # shortest first, in order
    assert len({c.token for c in claims}) == 3
    held = Counter(s.claim_id for s in look(manifest).staged() if s.claim_id is not None and s.claim_id > 0)
    assert sorted(held.items()) == sorted((c.id, len(c.hashes)) for c in claims)
    assert manifest.claim_many(4, 3) == []  # nothing pending left
    assert look(manifest).meta()["next_chunk"] == 3


def test_commit_many_fences_each_claim_alone(manifest: Manifest) -> None:
    """One transaction for three claims, one of them taken over: that one is refused and counted, the
    other two are committed."""
    scan(manifest, {f"d{i}": f"text {i:02d}" for i in range(12)})
    a, b, c = manifest.claim_many(4, 3, owner=REMOTE_A)
    expire(manifest, b)
    other = second_worker(manifest)
    try:
        taken = other.claim(4, owner=REMOTE_B)
        assert taken is not None and sorted(taken.hashes) == sorted(b.hashes)
        results = manifest.commit_many([
            Finished(x, [(h, x.chunk * 4 + i) for i, h in enumerate(x.hashes)], [], None) for x in (a, b, c)])
        assert results[0] == 0 and results[2] == 0
        assert isinstance(results[1], LeaseLostError) and f"claim {b.id}" in str(results[1])
        assert manifest.status_counts()["fencing_refusals"] == 1
        states = content_states(manifest)
        assert {states[h] for h in a.hashes + c.hashes} == {"done"}
        assert {states[h] for h in b.hashes} == {"claimed"}  # still B's
        claim_states = {i: c.state for i, c in look(manifest).claims().items()}
        assert (claim_states[a.id], claim_states[b.id], claim_states[c.id]) == ("committed", "expired",
                                                                                 "committed")
        commit_all(other, taken)
        assert set(content_states(manifest).values()) == {"done"}
    finally:
        other.close()


class _BrokenChunker:
    """A fake chunker that fails, as anything inside a scan batch may (a unit-test seam, no model)."""

    def split_many(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        raise RuntimeError("broke inside the batch")


def test_a_scan_keeps_the_batches_before_a_stop_between_them_and_none_of_a_batch_cut_short(
        manifest: Manifest) -> None:
    """`scanning` shares one write transaction between batches. Stopped between two batches (a source
    that broke off), it commits what was scanned; stopped inside a batch, whose statements are half
    done, it rolls the open transaction back, the whole batches before it included."""
    def live() -> list[str]:
        return sorted(look(manifest).documents())

    with pytest.raises(RuntimeError, match="broke off"), manifest.scanning():
        manifest.scan_batch(records({"a": "alpha", "b": "beta"}), ScanCounts())
        assert manifest.conn.in_transaction  # not committed per batch
        raise RuntimeError("the source broke off")
    assert live() == ["a", "b"] and not manifest.conn.in_transaction
    with pytest.raises(RuntimeError, match="inside the batch"), manifest.scanning():
        manifest.scan_batch(records({"c": "gamma"}), ScanCounts())
        manifest.scan_batch(records({"d": "delta"}), ScanCounts(),
                            chunker=_BrokenChunker(), split=True)  # type: ignore[arg-type]
    assert live() == ["a", "b"] and not manifest.conn.in_transaction
    assert manifest.counts_problems() == []
    with manifest.scanning():
        manifest.scan_batch(records({"c": "gamma"}), ScanCounts())
    assert live() == ["a", "b", "c"] and manifest.status_counts()["pending"] == 3


def test_a_scan_commits_as_it_grows_with_what_it_committed_before(tmp_path: Path) -> None:
    """`scanning` commits its shared transaction once it holds as many rows as the scan committed
    before (at least one batch, at most eight): with batches of 2 rows, after rows 2, 4, 8, 16, 32, 48
    ... A second connection sees each commit as it happens, and the scan's end commits the rest."""
    m = Manifest(tmp_path / "manifest.sqlite", replace(SETTINGS, scan_batch=2), create=True)
    seen: list[int] = []
    try:
        with Inspection.open(tmp_path / "manifest.sqlite") as other:
            with m.scanning():
                for n in range(30):
                    m.scan_batch(records({f"d{2 * n}": f"text {2 * n}",
                                          f"d{2 * n + 1}": f"text {2 * n + 1}"}), ScanCounts())
                    seen.append(len(other.documents()))
            assert seen[:8] == [2, 4, 4, 8, 8, 8, 8, 16] and seen[-1] == 48, seen
            assert len(other.documents()) == 60
        assert m.counts_problems() == [] and m.status_counts()["pending"] == 60
    finally:
        m.close()


class _StopAfterBegin(sqlite3.Connection):
    """A connection that raises KeyboardInterrupt just after a BEGIN IMMEDIATE took effect, once armed,
    as a stop signal landing there would (a fake for this unit test: no signal is sent)."""

    armed = False

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        cursor = super().execute(sql, parameters)
        if self.armed and sql == "BEGIN IMMEDIATE":
            self.armed = False
            raise KeyboardInterrupt
        return cursor


class _ManifestStoppedAfterBegin(Manifest):
    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               factory=_StopAfterBegin)


def test_a_stop_just_after_the_scan_began_its_transaction_leaves_none_open(tmp_path: Path) -> None:
    """A stop signal landing just after the scan's BEGIN: the scan's end rolls that transaction back,
    so that the run can still be recorded (a transaction left open failed the next one)."""
    m = _ManifestStoppedAfterBegin(tmp_path / "manifest.sqlite", SETTINGS, create=True)
    try:
        conn = m.conn
        assert isinstance(conn, _StopAfterBegin)
        conn.armed = True
        with pytest.raises(KeyboardInterrupt), m.scanning():
            m.scan_batch(records({"a": "alpha"}), ScanCounts())
        assert not conn.in_transaction
        run = m.start_run()  # a write transaction of its own
        m.finish_run(run, RunState.INTERRUPTED, {})
        assert m.live_count() == 0
    finally:
        m.close()


def test_a_scan_looks_ids_up_again_once_the_documents_are_not_only_its_own(tmp_path: Path) -> None:
    """A scan into an empty index takes the ids of its batches as new without looking them up, in
    the transactions where the documents are only those it wrote. It looks them up where documents
    were there before it, and after another connection committed between its transactions."""
    m = Manifest(tmp_path / "a.sqlite", replace(SETTINGS, scan_batch=2), create=True)
    other = Manifest(tmp_path / "a.sqlite", SETTINGS)
    before = Manifest(tmp_path / "b.sqlite", SETTINGS, create=True)
    try:
        # Committed after rows 2 and 4, then rows 5-8 in one transaction: "x" is looked up in it.
        counts = ScanCounts()
        with m.scanning():
            for n, batch in enumerate([{"a": "1", "b": "2"}, {"c": "3", "d": "4"}, {"e": "5", "f": "6"},
                                       {"x": "seen", "g": "7"}]):
                if n == 2:
                    scan(other, {"x": "seen"})
                m.scan_batch(records(batch), counts)
        assert (counts.new, counts.unchanged) == (7, 1)
        # Rows 1-16 in one transaction, which began with a document there.
        scan(before, {"x": "seen"})
        counts = ScanCounts()
        with before.scanning():
            before.scan_batch(records({"p": "8"}), counts)
            before.scan_batch(records({"x": "seen", "q": "9"}), counts)
        assert (counts.new, counts.unchanged) == (2, 1)
        assert m.counts_problems() == [] and before.counts_problems() == []
    finally:
        for manifest in (other, m, before):
            manifest.close()
