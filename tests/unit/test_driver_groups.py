"""The driver's groups of claims (issue 11): several one-chunk claims taken in one transaction, embedded
as one submission, written chunk by chunk (while the next group is claimed and embedded) and committed
in one transaction, sized by worker time.

Real SQLite and a real Zarr store under tmp_path; the fake model (documented as a fake: a deterministic
vector per text) stands in for the worker, so that these tests are about the bookkeeping.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer._driver import GroupSizer
from indexer.manifest import Finished, Inspection, Manifest
from indexer.runners import BatchDone, EmbedResult
from indexer.runners._liveness import HangRule
from indexer.runners.inline import InlineRunner
from indexer.settings import Settings
from indexer.store import VectorStore

from helpers import RecordingEmbedder, assert_serves, docs_of


@pytest.fixture
def grouped() -> Settings:
    """Chunks of 8 rows; groups grow as fast as allowed (the fake model is far under a minute a chunk),
    up to 4 chunks: half of the 8 allowed in flight, as a group is written while the next is embedded."""
    return Settings(chunk_rows=8, scan_batch=16, retry_attempts=3, claim_seconds=60.0, claim_chunks_max=8)


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of claims in each commit transaction of the syncs that follow (a spy on the real
    Manifest.commit_many)."""
    sizes: list[int] = []
    real = Manifest.commit_many

    def spy(self: Manifest, finished: Sequence[Finished]) -> object:
        sizes.append(len(finished))
        return real(self, finished)

    monkeypatch.setattr(Manifest, "commit_many", spy)
    return sizes


def test_the_sizer_grows_by_doubling_to_the_time_asked_and_shrinks_for_a_slow_worker() -> None:
    sizer = GroupSizer(seconds=1.0, most=32, chunk_rows=1000)
    assert sizer.chunks == 1
    seen = []
    for _ in range(7):
        sizer.observe(texts=1000 * sizer.chunks, seconds=0.01 * sizer.chunks)  # 10 ms a chunk
        seen.append(sizer.chunks)
    assert seen == [2, 4, 8, 16, 32, 32, 32]  # doubling, then capped at `most`
    sizer.observe(texts=1000 * 32, seconds=0.1 * 32)  # the worker slowed to 100 ms a chunk
    assert sizer.chunks == 10  # 1 s of it
    sizer.observe(texts=1000, seconds=5.0)  # slower than the time asked: one chunk at a time
    assert sizer.chunks == 1
    off = GroupSizer(seconds=0.0, most=32, chunk_rows=1000)
    off.observe(texts=1000, seconds=0.001)
    assert off.chunks == 1


def test_groups_commit_several_claims_at_once_and_store_every_vector(
        tmp_path: Path, grouped: Settings, commits: list[int]) -> None:
    docs = docs_of(100)  # 13 chunks of 8
    ix = tmp_path / "ix"
    emb = RecordingEmbedder()
    summary = indexer.sync(ix, docs.items(), embedder=emb, settings=grouped)
    assert summary.embedded == 100 and summary.claims == 13 and summary.failed == 0
    assert commits[:3] == [1, 2, 4] and max(commits) == 4 and sum(commits) == 13
    # one submission per group: the runner saw the group's texts end to end
    assert [len(c) for c in emb.calls][:3] == [8, 16, 32]
    assert emb.embedded == Counter(docs.values())
    assert_serves(ix, docs)
    with indexer.open(ix, grouped) as idx:
        assert idx.verify().ok
        # each claim got a chunk of its own: 13 chunk files, slots of one chunk per claim
        assert len(set(idx.store.chunk_files())) == 13
        assert idx.status()["active_claims"] == 0


def test_claim_seconds_zero_keeps_one_claim_per_transaction(
        tmp_path: Path, grouped: Settings, commits: list[int]) -> None:
    docs = docs_of(40)
    indexer.sync(tmp_path / "ix", docs.items(), embedder=RecordingEmbedder(),
                 settings=replace(grouped, claim_seconds=0.0))
    assert commits == [1] * 5
    assert_serves(tmp_path / "ix", docs)


def test_a_failing_document_in_a_group_fails_alone_in_its_own_claim(
        tmp_path: Path, grouped: Settings, commits: list[int]) -> None:
    docs = docs_of(60)
    docs["zz-poison"] = "x" * 40  # the longest text: claimed last, in a later claim of a group
    ix = tmp_path / "ix"
    summary = indexer.sync(ix, docs.items(), embedder=RecordingEmbedder(fail=[docs["zz-poison"]]),
                           settings=grouped)
    assert (summary.embedded, summary.failed) == (60, 1) and max(commits) > 1
    good = {k: v for k, v in docs.items() if k != "zz-poison"}
    assert_serves(ix, good)
    with indexer.open(ix, grouped) as idx:
        [(doc, reason)] = idx.failures()
        assert doc == "zz-poison" and "cannot embed" in reason
        assert idx.verify().ok


def test_an_interrupt_while_writing_a_group_gives_all_of_it_back(
        tmp_path: Path, grouped: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while the 5th chunk is written (the second chunk of the third group, 4 chunks): the
    groups before are committed, every claim of the third and of the fourth (claimed and embedded
    while the third was written) is released, and the next sync embeds exactly the rest."""
    docs = docs_of(100)
    ix = tmp_path / "ix"
    real = VectorStore.write_chunk
    writes: list[int] = []

    def interrupted(self: VectorStore, chunk: int, block: np.ndarray) -> bytes:
        writes.append(chunk)
        if len(writes) == 5:
            raise KeyboardInterrupt
        return real(self, chunk, block)

    monkeypatch.setattr(VectorStore, "write_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        indexer.sync(ix, docs.items(), embedder=RecordingEmbedder(), settings=grouped)
    monkeypatch.setattr(VectorStore, "write_chunk", real)
    with indexer.open(ix, grouped) as idx:
        st = idx.status()
        assert st["active_claims"] == 0
        assert st["done"] == 3 * 8  # the groups of 1 and 2 chunks
        claims = Counter(c.state for c in Inspection(idx.manifest.conn).claims().values())
        assert claims == Counter(committed=3, released=4 + 4)
        assert idx.verify().ok
    again = RecordingEmbedder()
    summary = indexer.sync(ix, docs.items(), embedder=again, settings=grouped)
    assert summary.embedded == 100 - 24 and sum(again.embedded.values()) == 76
    assert_serves(ix, docs)
    assert max(again.embedded.values()) == 1


class _GivesUpAt:
    """A runner (a fake, wrapping the inline one) whose `n`th submission fails as a backend that went
    away would: its future raises."""

    capacity = 1

    def __init__(self, embedder: RecordingEmbedder, n: int) -> None:
        self.inner = InlineRunner(embedder)
        self.info = self.inner.info
        self.n = n
        self.submitted = 0

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        self.submitted += 1
        if self.submitted < self.n:
            return self.inner.submit(texts, on_batch)
        failed: Future[EmbedResult] = Future()
        failed.set_exception(RuntimeError("the backend went away"))
        return failed

    def watch_for_hangs(self, rule: HangRule) -> None:
        self.inner.watch_for_hangs(rule)

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def close(self) -> None:
        pass


def test_a_runner_error_keeps_the_group_written_before_it(tmp_path: Path, grouped: Settings) -> None:
    """The runner fails the third group (4 chunks) while the second (2 chunks) is written: the second is
    committed, not handed back, so the next sync embeds only what was never embedded."""
    docs = docs_of(100)
    ix = tmp_path / "ix"
    first = RecordingEmbedder()
    with pytest.raises(RuntimeError, match="went away"):
        indexer.sync(ix, docs.items(), runner=_GivesUpAt(first, 3), settings=grouped)
    with indexer.open(ix, grouped) as idx:
        st = idx.status()
        assert st["active_claims"] == 0
        assert st["done"] == 3 * 8 == sum(first.embedded.values())  # the groups of 1 and 2 chunks
        assert idx.verify().ok
    again = RecordingEmbedder()
    summary = indexer.sync(ix, docs.items(), embedder=again, settings=grouped)
    assert summary.embedded == 100 - 24
    assert_serves(ix, docs)
    assert not set(first.embedded) & set(again.embedded)  # nothing embedded twice


def test_an_interrupt_between_a_result_and_its_write_gives_the_group_back(
        tmp_path: Path, grouped: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C just after the driver took the second group's result off the runner, before handing it to
    the chunk writers (the group is then neither in flight nor being written): its claims go back."""
    docs = docs_of(100)
    ix = tmp_path / "ix"
    real = GroupSizer.observe
    seen: list[int] = []

    def interrupted(self: GroupSizer, texts: int, seconds: float) -> None:
        seen.append(texts)
        if len(seen) == 2:
            raise KeyboardInterrupt
        real(self, texts, seconds)

    monkeypatch.setattr(GroupSizer, "observe", interrupted)
    with pytest.raises(KeyboardInterrupt):
        indexer.sync(ix, docs.items(), embedder=RecordingEmbedder(), settings=grouped)
    monkeypatch.setattr(GroupSizer, "observe", real)
    with indexer.open(ix, grouped) as idx:
        assert idx.status()["active_claims"] == 0
        assert [s for s in Inspection(idx.manifest.conn).staged() if (s.claim_id or 0) > 0] == []
        assert idx.verify().ok
        done = idx.status()["done"]
    summary = indexer.sync(ix, docs.items(), embedder=RecordingEmbedder(), settings=grouped)
    assert summary.embedded == 100 - done
    assert_serves(ix, docs)
