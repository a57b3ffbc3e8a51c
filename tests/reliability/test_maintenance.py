"""Maintenance next to other processes (issue 10, items 1, 2 and 12), with real `indexer` processes.

- `indexer compact` in a loop while `indexer sync --delete-missing` runs on an index with dead slots,
  and two `indexer compact` processes started together: every compact either does its whole work or
  changes nothing and says that another process holds the index (exit 1); at the end `verify` is clean
  and every served document has the fake model's vector of its current text.
- A reader snapshot (`vectors()`) taken before a compact still reads every row after it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer.embedders.fake import FakeEmbedder

CHUNK_ROWS = 16
ENV = dict(os.environ, HF_HUB_OFFLINE="1", INDEXER_CHUNK_ROWS=str(CHUNK_ROWS), INDEXER_SCAN_BATCH="500")
for _name in ("INDEXER_CRASH_AT", "INDEXER_PAUSE_AT", "INDEXER_LEASE_SECONDS"):
    ENV.pop(_name, None)
LOCKED = "another process is using the index"  # what a compact that cannot get the lock says


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "indexer", *args]


def write_source(path: Path, docs: dict[str, str]) -> Path:
    path.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in docs.items()))
    return path


def make_docs(n: int, seed: int, prefix: str = "d") -> dict[str, str]:
    rng = random.Random(seed)
    words = "abcdefgh"
    return {f"{prefix}{i:05d}": f"{seed} {i} " + " ".join(rng.choice(words) for _ in range(rng.randint(1, 9)))
            for i in range(n)}


def run_ok(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cli(*args), env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def sync_ok(source: Path, index: Path, *extra: str) -> None:
    run_ok("sync", str(source), "--index", str(index), "--model", "fake:16", *extra)


def check_whole(index: Path, docs: dict[str, str]) -> None:
    """verify clean (CLI and library), and every document served with its right vector."""
    run_ok("verify", str(index))
    with indexer.open(index) as idx:
        report = idx.verify()
        assert report.ok, report.problems
        view_ids, vecs = idx.vectors()
        ids, matrix = list(view_ids), np.asarray(vecs)
        status = idx.status()
    assert sorted(ids) == sorted(docs)
    assert np.array_equal(matrix, FakeEmbedder(16).embed([docs[i] for i in ids]))
    assert status["done"] == status["documents"] == len(docs)


def compact_outcome(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str], err: str) -> str:
    """'done' or 'locked'; anything else fails the test."""
    if proc.returncode == 0:
        return "done"
    assert proc.returncode == 1 and LOCKED in err and "nothing was changed" in err, err
    return "locked"


def test_compact_loop_during_a_sync_loses_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    old = make_docs(3000, 1)
    sync_ok(write_source(tmp_path / "old.jsonl", old), index)
    # The new source keeps every other document and adds as many new ones: the sync deletes half of
    # the old ones (dead slots for compact to pack) while it embeds the new ones.
    new = {k: v for i, (k, v) in enumerate(old.items()) if i % 2} | make_docs(5000, 2, prefix="n")
    source = write_source(tmp_path / "new.jsonl", new)
    sync = subprocess.Popen(cli("sync", str(source), "--index", str(index), "--model", "fake:16",
                                "--delete-missing", "--max-delete", "1", "-q"), env=ENV,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    outcomes: list[str] = []
    packed = 0
    while sync.poll() is None:  # compact in this process, as often as it can, while the sync runs
        try:
            with indexer.open(index) as idx:
                packed += idx.compact().chunks_packed
            outcomes.append("done")
        except indexer.IndexerError as exc:
            assert LOCKED in str(exc) and "nothing was changed" in str(exc), exc
            outcomes.append("locked")
            time.sleep(0.01)
    _, err = sync.communicate(timeout=300)
    assert sync.returncode == 0, err
    assert outcomes and "locked" in outcomes, outcomes  # compacts ran while the sync held the index
    packed += json.loads(run_ok("compact", str(index), "--json").stdout)["chunks_packed"]
    assert packed > 0  # the dead slots the sync made were packed, by a compact once the sync ended
    check_whole(index, new)
    print(f"\ncompact during sync: {outcomes.count('locked')} refused, {outcomes.count('done')} done")


def test_two_compacts_at_once_lose_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    docs = make_docs(3000, 3)
    sync_ok(write_source(tmp_path / "s0.jsonl", docs), index)
    outcomes: list[str] = []
    for trial in range(3):
        # Delete a third of the documents and add others: sparse chunks everywhere.
        keep = {k: v for i, (k, v) in enumerate(docs.items()) if (i + trial) % 3}
        docs = keep | make_docs(500, 10 + trial, prefix=f"t{trial}-")
        sync_ok(write_source(tmp_path / f"s{trial + 1}.jsonl", docs), index, "--delete-missing",
                "--max-delete", "1")
        procs = [subprocess.Popen(cli("compact", str(index)), env=ENV, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=300)
            outcomes.append(compact_outcome(proc, err))
        assert "done" in outcomes[-2:], outcomes
        check_whole(index, docs)
    print(f"\ntwo compacts at once, 3 trials: {outcomes}")


def test_compact_refused_while_the_index_is_held_changes_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    docs = make_docs(200, 4)
    sync_ok(write_source(tmp_path / "a.jsonl", docs), index)
    half = dict(list(docs.items())[::2])
    sync_ok(write_source(tmp_path / "b.jsonl", half), index, "--delete-missing", "--max-delete", "1")
    before = {p: p.read_bytes() for p in (index / "vectors.zarr").rglob("*") if p.is_file()}
    with indexer.open(index) as idx:
        slots_before = sorted(idx.manifest.done_slots())
    with indexer.open(index) as idx, idx.maintenance():
        done = subprocess.run(cli("compact", str(index)), env=ENV, capture_output=True, text=True,
                              timeout=120)
    assert compact_outcome(done, done.stderr) == "locked"
    assert "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in (index / "vectors.zarr").rglob("*") if p.is_file()} == before
    with indexer.open(index) as idx:
        assert sorted(idx.manifest.done_slots()) == slots_before
    run_ok("compact", str(index))
    check_whole(index, half)


def test_a_snapshot_taken_before_compact_still_reads(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    docs = make_docs(300, 5)
    sync_ok(write_source(tmp_path / "a.jsonl", docs), index)
    kept = {k: v for i, (k, v) in enumerate(docs.items()) if i % 3 == 0}
    sync_ok(write_source(tmp_path / "b.jsonl", kept), index, "--delete-missing", "--max-delete", "1")
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        first = vecs[0]  # reads (and maps) one chunk before the compact
        report = json.loads(run_ok("compact", str(index), "--json").stdout)
        assert report["chunks_packed"] > 0, report
        matrix = np.asarray(vecs)  # every other chunk it needs was removed by the compact
        assert np.array_equal(matrix[0], first)
        assert np.array_equal(matrix, FakeEmbedder(16).embed([kept[i] for i in ids]))
        assert np.array_equal(vecs[len(ids) - 1], matrix[-1])
        assert np.array_equal(idx.get(list(ids)[:5]), matrix[:5])


def test_a_snapshot_whose_vectors_compact_dropped_says_so(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    docs = make_docs(100, 6)
    sync_ok(write_source(tmp_path / "a.jsonl", docs), index)
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        assert len(ids) == len(docs)
        kept = dict(list(docs.items())[:1])
        sync_ok(write_source(tmp_path / "b.jsonl", kept), index, "--delete-missing", "--max-delete", "1")
        run_ok("compact", str(index))
        with pytest.raises(indexer.StoreError) as exc:
            np.asarray(vecs)
    message = str(exc.value)
    assert "compact" in message and "vectors()" in message and "repair" not in message, message


def test_a_sync_waits_for_a_compact_to_finish(tmp_path: Path) -> None:
    """A sync started while a compact holds the index waits for it (up to the busy timeout), then runs."""
    index = tmp_path / "idx"
    docs = make_docs(100, 7)
    sync_ok(write_source(tmp_path / "a.jsonl", docs), index)
    more = docs | make_docs(50, 8, prefix="m")
    source = write_source(tmp_path / "b.jsonl", more)
    with indexer.open(index) as idx, idx.maintenance(exclusive=True):  # what a compact holds
        sync = subprocess.Popen(cli("sync", str(source), "--index", str(index), "--model", "fake:16", "-q"),
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert sync.poll() is None  # still waiting
        with indexer.open(index) as other:
            assert other.status()["documents"] == len(docs)  # it has not scanned anything
    _, err = sync.communicate(timeout=120)
    assert sync.returncode == 0, err
    check_whole(index, more)
