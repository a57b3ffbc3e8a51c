"""Several processes on one index at once.

- Two `indexer sync` runs of the same source, started together on a new index: both exit 0, the index
  is whole (verify, integrity_check), and they shared the work: the sum of what each embedded is the
  number of distinct contents, none embedded twice.
- Readers (`indexer status` processes and `indexer.open().vectors()` in this process) polling during a
  sync never see a document served without its whole, finite vector, and never see the served count
  go down.
- Fencing: a sync stopped (SIGSTOP) while it holds a claim, until its short lease has expired; another
  sync takes the claim over and finishes; then SIGCONT. The stalled worker's commit (or renewal) is
  refused and counted in `fencing_refusals`, it exits 0, and nothing it computed replaces the newer
  claim's vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import psutil
import pytest

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection

from manifest_surgery import downgrade_to_schema_1

N_DOCS = 3000
CHUNK_ROWS = 16
# One claim per transaction (INDEXER_CLAIM_SECONDS=0): these tests stall and fence single claims;
# groups of claims are fenced claim by claim too (tests/test_manifest.py, tests/test_driver_groups.py).
ENV = dict(os.environ, HF_HUB_OFFLINE="1", INDEXER_CHUNK_ROWS=str(CHUNK_ROWS), INDEXER_SCAN_BATCH="500",
           INDEXER_CLAIM_SECONDS="0")
ENV.pop("INDEXER_CRASH_AT", None)
ENV.pop("INDEXER_PAUSE_AT", None)
ENV.pop("INDEXER_LEASE_SECONDS", None)
LEASE = 1.5  # seconds: the lease of the worker that is stalled


def sync_cmd(source: Path, index: Path) -> list[str]:
    return [sys.executable, "-m", "indexer", "sync", str(source), "--index", str(index),
            "--model", "fake:16", "--json", "-q"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    rng = random.Random(7)
    words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "lease",
             "claim", "chunk", "token"]
    docs: dict[str, str] = {}
    for i in range(N_DOCS):
        if i % 30 == 3 and i > 30:
            docs[f"c{i:05d}"] = docs[f"c{i - 30:05d}"]  # shared contents
        else:
            docs[f"c{i:05d}"] = f"{i} " + " ".join(rng.choice(words) for _ in range(rng.randint(2, 25)))
    path = tmp_path_factory.mktemp("conc") / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path, docs


def finish(proc: subprocess.Popen[str]) -> dict[str, object]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    summary: dict[str, object] = json.loads(out)
    return summary


def check_index(index: Path, docs: dict[str, str]) -> None:
    """Whole and right: integrity ok, verify clean, every document served with the fake model's
    vector of its text, bit for bit."""
    with indexer.open(index) as idx:
        assert idx.manifest.integrity_check() == "ok"
        report = idx.verify()
        assert report.ok and not report.problems, report.problems
        view_ids, vecs = idx.vectors()
        ids, matrix = list(view_ids), np.asarray(vecs)
        status = idx.status()
    assert sorted(ids) == sorted(docs)
    assert np.array_equal(matrix, FakeEmbedder(16).embed([docs[i] for i in ids]))
    assert status["done"] == status["documents"] == len(docs) and status["active_claims"] == 0


def test_two_syncs_share_the_work(corpus: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    source, docs = corpus
    distinct = len(set(docs.values()))
    for round_ in range(2):  # a new index both race to create; then an index that exists already
        index = tmp_path / f"idx{round_}"
        already = 0
        if round_ == 1:
            first = tmp_path / "first.jsonl"
            first.write_text(source.read_text().splitlines(keepends=True)[0])
            run = subprocess.run(sync_cmd(first, index), env=ENV, capture_output=True, text=True)
            assert run.returncode == 0, run.stderr
            already = 1
        procs = [subprocess.Popen(sync_cmd(source, index), env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        a, b = (finish(p) for p in procs)
        # No content embedded twice; both did part of it.
        assert a["embedded"] + b["embedded"] == distinct - already, (a, b)  # type: ignore[operator]
        assert a["embedded"] > 0 and b["embedded"] > 0, (a, b)  # type: ignore[operator]
        assert a["fencing_refusals"] == b["fencing_refusals"] == 0
        check_index(index, docs)
        with Inspection.open(index) as look:
            runs = [run.state for run in look.runs()]
            claims = Counter(claim.state for claim in look.claims().values())
        assert runs == ["finished"] * (2 + already)
        assert claims == {"committed": a["claims"] + b["claims"] + already}  # type: ignore[operator]
        print(f"\nround {round_}: embedded {a['embedded']} + {b['embedded']} = {distinct - already}")


def test_two_syncs_share_the_chunks_of_long_documents(tmp_path: Path) -> None:
    """Two syncs at once of a corpus with long documents (--chunk-tokens, words): each chunk is
    embedded once between them, every long document is served once whole, with the normalized mean
    of its chunks' vectors."""
    from indexer.chunking import make_chunker

    rng = random.Random(11)
    words = ["one", "two", "three", "four", "five", "six", "seven", "lease", "claim", "chunk"]

    def sentence() -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + "."

    docs = {f"s{i:04d}": f"{i} {sentence()}" for i in range(400)}
    docs.update({f"l{i:03d}": f"long {i}\n\n" + "\n\n".join(" ".join(sentence() for _ in range(3))
                                                                for _ in range(8)) for i in range(60)})
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    chunker = make_chunker("fake:16", 0, "", 20, 0)
    assert chunker is not None
    chunks = {d: [t[a:b] for a, b in chunker.split(t)] for d, t in docs.items()}
    distinct = len({c for parts in chunks.values() for c in parts})
    index = tmp_path / "idx"
    cmd = [*sync_cmd(source, index), "--chunk-tokens", "20"]
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    a, b = (finish(p) for p in procs)
    assert a["embedded"] + b["embedded"] == distinct, (a, b)  # type: ignore[operator]
    fake = FakeEmbedder(16)
    with indexer.open(index) as idx:
        assert idx.verify().ok
        ids, vecs = idx.vectors()
        rows = dict(zip(ids, np.asarray(vecs), strict=True))
        assert idx.status()["chunks"] == sum(len(p) for p in chunks.values())
    assert sorted(rows) == sorted(docs)
    for doc_id, parts in chunks.items():
        mean = fake.embed(parts).astype(np.float64).sum(axis=0)
        assert np.allclose(rows[doc_id], mean / np.linalg.norm(mean), rtol=0, atol=1e-6), doc_id
    assert sum(len(p) > 1 for p in chunks.values()) == 60


def test_readers_during_a_sync(corpus: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    source, docs = corpus
    index = tmp_path / "idx"
    fake = FakeEmbedder(16)
    sync = subprocess.Popen(sync_cmd(source, index), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    status_polls: list[dict[str, object]] = []
    errors: list[str] = []

    def poll_status_cli() -> None:
        while sync.poll() is None:
            if not indexer.Index.exists(index):
                time.sleep(0.01)
                continue
            run = subprocess.run([sys.executable, "-m", "indexer", "status", str(index), "--json"],
                                 env=ENV, capture_output=True, text=True, timeout=60)
            if run.returncode != 0:
                errors.append(run.stderr)
                return
            status_polls.append(json.loads(run.stdout))

    poller = threading.Thread(target=poll_status_cli)
    poller.start()
    reads = 0
    last_served = 0
    mid_run = 0  # snapshots taken with some but not all documents done
    while sync.poll() is None:
        if not indexer.Index.exists(index):
            time.sleep(0.005)
            continue
        with indexer.open(index) as idx:
            before = idx.status()
            view_ids, vecs = idx.vectors()
            ids, matrix = list(view_ids), np.asarray(vecs)
        reads += 1
        assert matrix.shape == (len(ids), 16)
        assert np.isfinite(matrix).all(), "a served document without its vector"
        assert np.array_equal(matrix, fake.embed([docs[i] for i in ids]))
        assert len(ids) >= last_served and len(ids) >= before["done"]
        last_served = len(ids)
        mid_run += 0 < len(ids) < len(docs)
    poller.join()
    summary = finish(sync)
    assert not errors, errors
    assert summary["embedded"] == len(set(docs.values()))
    check_index(index, docs)
    for st in status_polls:
        assert st["done"] + st["pending"] + st["failed"] == st["documents"]  # type: ignore[operator]
    print(f"\nreaders: {reads} vectors() snapshots ({mid_run} mid-run), {len(status_polls)} "
          "`indexer status` runs during the sync")
    assert mid_run >= 3 and status_polls, (reads, mid_run, status_polls)


def active_claim(index: Path, pid: int) -> tuple[int, int, float, list[bytes]] | None:
    """(claim id, chunk, expires_at, hashes) of the active claim held by process `pid`, if any."""
    with Inspection.open(index) as look:
        held = [(claim_id, claim) for claim_id, claim in look.claims().items()
                if claim.state == "active" and f"|{pid}|" in claim.owner]
        if not held:
            return None
        claim_id, claim = held[0]
        hashes = [s.hash for s in look.staged() if s.claim_id == claim_id]
        return claim_id, claim.chunk, claim.expires_at, hashes


def holds_write_lock(index: Path) -> bool:
    with Inspection.open(index, timeout=0) as look:
        return look.write_locked()


def take_over(index: Path, source: Path, docs: dict[str, str], stalled: subprocess.Popen[str]) -> None:
    """`stalled` is stopped holding a claim: wait out its lease, let another sync finish the job, resume
    the stalled one, and check that it was fenced off."""
    claim = active_claim(index, stalled.pid)
    assert claim is not None
    claim_id, chunk, expires_at, hashes = claim
    time.sleep(max(0.0, expires_at - time.time()) + 0.2)
    other = subprocess.run(sync_cmd(source, index), env=ENV, capture_output=True, text=True, timeout=120)
    assert other.returncode == 0, other.stderr
    taker = json.loads(other.stdout)
    # The other sync re-claimed the stalled claim's contents and finished them, in another chunk.
    with Inspection.open(index) as look:
        assert look.claims()[claim_id].state == "expired"
        held = set(hashes)
        slots = {h: c.slot for h, c in look.contents().items()
                 if c.state == "done" and h in held and c.slot is not None}
    assert len(slots) == len(hashes) and all(s // CHUNK_ROWS != chunk for s in slots.values())
    newer = {s // CHUNK_ROWS for s in slots.values()}
    with indexer.open(index) as idx:
        files = {c: hashlib.sha256(idx.store.chunk_path(c).read_bytes()).hexdigest() for c in newer}
    os.kill(stalled.pid, signal.SIGCONT)
    stalled_summary = finish(stalled)
    assert stalled_summary["fencing_refusals"] == 1, stalled_summary
    assert stalled_summary["embedded"] + taker["embedded"] == len(set(docs.values()))
    with indexer.open(index) as idx:
        assert idx.status()["fencing_refusals"] == 1
        assert dict(idx.manifest.done_slots()).items() >= slots.items()  # nothing was repointed
        assert {c: hashlib.sha256(idx.store.chunk_path(c).read_bytes()).hexdigest() for c in newer} == files
    check_index(index, docs)
    with indexer.open(index) as idx:
        idx.compact()  # the stalled worker's chunk, if it wrote one, was an orphan: gone now
        assert chunk not in set(idx.store.chunk_files())
    check_index(index, docs)


def test_fencing_stalled_before_commit(corpus: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """Stopped right after writing its chunk, before the commit (INDEXER_PAUSE_AT): the commit is
    refused and its chunk file, written whole, is never served."""
    source, docs = corpus
    index = tmp_path / "idx"
    env = dict(ENV, INDEXER_LEASE_SECONDS=str(LEASE), INDEXER_PAUSE_AT="after-chunk-write:20")
    stalled = subprocess.Popen(sync_cmd(source, index), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while psutil.Process(stalled.pid).status() != psutil.STATUS_STOPPED:
        assert stalled.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    take_over(index, source, docs, stalled)


def test_fencing_stalled_at_random_moments(corpus: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """SIGSTOP from outside at random moments of the embed phase (wherever the worker is: embedding,
    writing, between claims), chosen while it holds a claim and no write lock."""
    source, docs = corpus
    rng = random.Random(11)
    env = dict(ENV, INDEXER_LEASE_SECONDS=str(LEASE))
    for round_ in range(2):
        index = tmp_path / f"idx{round_}"
        stalled = subprocess.Popen(sync_cmd(source, index), env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        start_after = rng.randrange(100, 1500)
        while True:
            assert stalled.poll() is None, "the sync finished before it could be stalled"
            try:
                with Inspection.open(index, timeout=1) as look:
                    done = look.contents_by_state()["done"]
            except sqlite3.Error:
                done = 0
            if done >= start_after:
                break
            time.sleep(0.005)
        while True:
            time.sleep(rng.uniform(0, 0.004))
            os.kill(stalled.pid, signal.SIGSTOP)
            time.sleep(0.02)
            if not holds_write_lock(index) and active_claim(index, stalled.pid) is not None:
                break
            os.kill(stalled.pid, signal.SIGCONT)
        take_over(index, source, docs, stalled)


def test_two_processes_upgrade_an_old_manifest_at_once(corpus: tuple[Path, dict[str, str]],
                                                       tmp_path: Path) -> None:
    """One process is inside the migration of a schema-1 manifest (paused there, holding the write
    lock) when another opens the same manifest and waits for the lock: once the first commits, the
    second finds the migration applied and goes on, instead of failing on "table already exists"."""
    source, _ = corpus
    index = tmp_path / "idx"
    small = tmp_path / "small.jsonl"
    small.write_text("".join(source.read_text().splitlines(keepends=True)[:50]))
    run = subprocess.run(sync_cmd(small, index), env=ENV, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    downgrade_to_schema_1(index / "manifest.sqlite")
    status = [sys.executable, "-m", "indexer", "status", str(index), "--json"]
    first = subprocess.Popen(status, env=dict(ENV, INDEXER_PAUSE_AT="mid-migration"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while psutil.Process(first.pid).status() != psutil.STATUS_STOPPED:
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    second = subprocess.Popen(status, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # the second is started and waits for the write lock
    assert second.poll() is None
    os.kill(first.pid, signal.SIGCONT)
    for proc in (first, second):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert json.loads(out)["documents"] == 50
    with Inspection.open(index) as look:
        versions = [version for version, _, _ in look.migrations()]
    assert versions[:2] == [1, 2] and len(versions) == len(set(versions))
