"""A Hypothesis state machine over the life of one index, against a plain-dict model.

The index chunks (the fake model, --chunk-tokens 3: whitespace words): some texts are one chunk, others
several, some share chunks with others, and a "bad:" chunk makes its whole document fail. The model
keeps a state per chunk text; a document is served once every chunk of its text is done, with the
normalized mean of its chunks' fake vectors (a one-chunk document: its text's fake vector).

Steps: put (add or edit) / delete a document in the source, sync (with and without delete_missing),
crash (a forked sync SIGKILLed at a named crash point, then the same sync run again: what a user does
after kill -9), make the embedder fail "bad:" texts or heal it, retry, compact. After every step the
index serves exactly the model's documents, each with the fake model's vector of the model's text, bit
for bit; status counts agree; `verify` is clean. Straight after each kill, before the rerun, verify is
clean too and every served vector is either the document's old one or its new one (the old vector stays
readable until replaced; a document never stops being served mid-sync unless it is being deleted).

The default run is modest (derandomized, under a minute); `pytest -m slow` runs a longer random one.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import indexer
from indexer import _faults
from indexer.chunking import Chunker, make_chunker
from indexer.embedders.fake import FakeEmbedder

SETTINGS = indexer.Settings(chunk_rows=4, scan_batch=5, retry_attempts=3)
CHUNK_TOKENS = 3
IDS = [f"d{i}" for i in range(8)]
TEXTS = ([f"text number {i}" for i in range(6)] + ["bad: one", "bad: two"]
         # several chunks each; the first two share "alpha beta." and "text number 1"
         + ["alpha beta.\n\ntext number 1\n\ngamma delta epsilon.", "alpha beta.\n\nzeta eta theta iota.",
            "one two three four five six seven", "kappa lambda.\n\nbad: three four"])
FAKE = FakeEmbedder(16)
_CHUNKER = make_chunker(FAKE.info.model, 0, "", CHUNK_TOKENS, 0)
assert _CHUNKER is not None
CHUNKER: Chunker = _CHUNKER


def chunks_of(text: str) -> list[str]:
    return [text[a:b] for a, b in CHUNKER.split(text)]


def expected_vector(text: str) -> np.ndarray:
    """A one-chunk text's fake vector; a longer one's: the normalized mean of its chunks' vectors."""
    parts = chunks_of(text)
    if len(parts) == 1:
        one: np.ndarray = FAKE.embed([text])[0]
        return one
    mean = FAKE.embed(parts).astype(np.float64).sum(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def same_vector(got: np.ndarray, text: str) -> bool:
    """Bit for bit for a one-chunk text; a mean to float rounding (summation order) otherwise."""
    want = expected_vector(text)
    return bool(np.array_equal(got, want) if len(chunks_of(text)) == 1
                else np.allclose(got, want, rtol=0, atol=1e-6))
STATS: Counter[str] = Counter()  # what this session did, printed by test_zz_report (pytest -s)


class FlakyFake:
    """The fake model, but while `flaky` it fails every text that starts with "bad:"."""

    def __init__(self) -> None:
        self.info = FAKE.info
        self.flaky = False

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.flaky and any(t.startswith("bad:") for t in texts):
            raise ValueError("this text makes the model fail")
        return FAKE.embed(texts)


@dataclass
class Doc:
    cur: str  # the text the source gave last
    ready: str | None  # the text whose vector is served
    deleted: bool = False


class Model:
    """What the index should hold: documents and contents (chunk text -> pending, done or failed)."""

    def __init__(self) -> None:
        self.docs: dict[str, Doc] = {}
        self.contents: dict[str, str] = {}

    def state(self, text: str) -> str:
        """A document text's state from its chunks': done when all are, failed when one is. (A deleted
        document's text may have no contents left after a compact: not done.)"""
        states = {self.contents.get(c, "gone") for c in chunks_of(text)}
        return "done" if states == {"done"} else "failed" if "failed" in states else "pending"

    def sync(self, source: dict[str, str], delete_missing: bool, flaky: bool) -> None:
        for doc_id, text in source.items():
            doc = self.docs.get(doc_id)
            if doc is None or doc.cur != text or doc.deleted:
                for chunk in chunks_of(text):
                    self.contents.setdefault(chunk, "pending")
                # The old vector stays served until the new one is done (a done text serves at once).
                ready = text if self.state(text) == "done" else doc.ready if doc else None
                self.docs[doc_id] = Doc(text, ready)
        if delete_missing and source:  # an empty source deletes nothing
            for doc_id, doc in self.docs.items():
                if doc_id not in source:
                    doc.deleted = True
        for text, state in self.contents.items():
            if state != "pending":
                continue
            if flaky and text.startswith("bad:"):
                self.contents[text] = "failed"  # it used its attempts within this sync
            else:
                self.contents[text] = "done"
        for doc in self.docs.values():
            if self.state(doc.cur) == "done":
                doc.ready = doc.cur

    def retry(self) -> None:
        for text, state in self.contents.items():
            if state == "failed":
                self.contents[text] = "pending"

    def compact(self) -> None:
        live = [d for d in self.docs.values() if not d.deleted]
        keep = {c for d in live for t in (d.cur, d.ready) if t is not None for c in chunks_of(t)}
        self.contents = {t: s for t, s in self.contents.items() if t in keep}
        for doc in self.docs.values():  # deleted documents forget a served content that is gone
            if doc.ready is not None and any(c not in self.contents for c in chunks_of(doc.ready)):
                doc.ready = None

    def served(self) -> dict[str, str]:
        return {i: d.ready for i, d in self.docs.items()
                if not d.deleted and d.ready is not None and self.state(d.ready) == "done"}


def served_vectors(index: Path) -> dict[str, np.ndarray]:
    with indexer.open(index, SETTINGS) as idx:
        ids, vecs = idx.vectors()
        matrix = np.asarray(vecs)
        return {doc_id: matrix[i] for i, doc_id in enumerate(ids)}


def verify_clean(index: Path) -> indexer.VerifyReport:
    with indexer.open(index, SETTINGS) as idx:
        report = idx.verify()
    assert report.ok and not report.problems, report.problems
    return report


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="indexer-sm-"))
        self.index = self.tmp / "idx"
        self.source: dict[str, str] = {}
        self.model = Model()
        self.embedder = FlakyFake()
        self.created = False

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- the source ------------------------------------------------------------------------------

    @rule(doc_id=st.sampled_from(IDS), text=st.sampled_from(TEXTS))
    def put(self, doc_id: str, text: str) -> None:
        self.source[doc_id] = text

    @rule(doc_id=st.sampled_from(IDS))
    def delete(self, doc_id: str) -> None:
        self.source.pop(doc_id, None)

    @rule(flaky=st.booleans())
    def set_flaky(self, flaky: bool) -> None:
        self.embedder.flaky = flaky

    # -- the index -------------------------------------------------------------------------------

    def _sync(self, delete_missing: bool) -> indexer.SyncSummary:
        docs = [{"id": k, "text": v} for k, v in self.source.items()]
        try:
            # max_delete=1: the model deletes whatever the source lost (the guard is tested in test_cli.py)
            return indexer.sync(self.index, docs, embedder=self.embedder, settings=SETTINGS,
                                delete_missing=delete_missing, max_delete=1.0, chunk_tokens=CHUNK_TOKENS)
        except indexer.IncompleteSourceError as exc:
            # An empty source cannot tell what is missing (issue 10, item 4): synced, nothing deleted.
            assert delete_missing and not docs, exc
            return cast(indexer.SyncSummary, exc.summary)

    @rule(delete_missing=st.booleans())
    def sync(self, delete_missing: bool) -> None:
        self._sync(delete_missing)
        STATS["syncs"] += 1
        self.created = True
        self.model.sync(self.source, delete_missing, self.embedder.flaky)

    @rule(delete_missing=st.booleans(),
          point=st.sampled_from(["mid-scan", "after-chunk-write", "mid-commit", "mid-migration"]),
          nth=st.integers(1, 2),
          edits=st.lists(st.tuples(st.sampled_from(IDS), st.sampled_from(TEXTS)), min_size=1, max_size=5))
    def crash(self, delete_missing: bool, point: str, nth: int, edits: list[tuple[str, str]]) -> None:
        """Some edits (so that there is work), then a sync in a forked child, SIGKILLed the nth time it
        reaches `point` (if it does), then the same sync again to completion."""
        self.source.update(edits)
        pid = os.fork()
        if pid == 0:  # the child: never return into pytest
            code = 2
            try:
                _faults._remaining.clear()
                _faults._remaining[point] = nth
                self._sync(delete_missing)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        assert killed or (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0), status
        STATS[f"kills at {point}" if killed else "crash steps that finished"] += 1
        if killed and indexer.Index.exists(self.index):
            self.check_mid_sync(delete_missing)
        self.sync(delete_missing)

    def check_mid_sync(self, delete_missing: bool) -> None:
        verify_clean(self.index)
        before = self.model.served()
        served = served_vectors(self.index)
        for doc_id, vector in served.items():
            allowed = set()
            doc = self.model.docs.get(doc_id)
            if doc is not None and doc.ready is not None and self.model.state(doc.ready) == "done":
                allowed.add(doc.ready)  # its old vector (also that of a deleted id the source has again)
            if doc_id in self.source:
                allowed.add(self.source[doc_id])
            elif doc is not None and not doc.deleted:
                # Left out of the source without --delete-missing: still live, and its pending text is
                # embedded by this sync like any pending work (Model.sync does so too).
                allowed.add(doc.cur)
            assert any(same_vector(vector, t) for t in allowed), (doc_id, allowed)
        for doc_id in before:
            if doc_id in self.source or not delete_missing:
                assert doc_id in served, f"{doc_id} stopped being served in the middle of a sync"

    @precondition(lambda self: self.created)
    @rule()
    def retry(self) -> None:
        with indexer.open(self.index, SETTINGS) as idx:
            n = idx.retry()
        assert n == sum(1 for s in self.model.contents.values() if s == "failed")
        self.model.retry()

    @precondition(lambda self: self.created)
    @rule()
    def compact(self) -> None:
        with indexer.open(self.index, SETTINGS) as idx:
            idx.compact()
            assert not idx.store.partial_files()
        self.model.compact()
        report = verify_clean(self.index)
        assert not report.notes, report.notes  # no orphan chunk, no .partial file

    # -- after every step ------------------------------------------------------------------------

    @invariant()
    def index_matches_model(self) -> None:
        STATS["steps"] += 1
        if not self.created:
            return
        expected = self.model.served()
        served = served_vectors(self.index)
        assert set(served) == set(expected)
        for doc_id, text in expected.items():
            assert same_vector(served[doc_id], text), doc_id
        verify_clean(self.index)
        with indexer.open(self.index, SETTINGS) as idx:
            status = idx.status()
        live = {i: d for i, d in self.model.docs.items() if not d.deleted}
        by_state = {s: sum(1 for d in live.values() if self.model.state(d.cur) == s)
                    for s in ("pending", "done", "failed")}
        assert (status["documents"], status["done"], status["failed"], status["pending"]) == (
            len(live), by_state["done"], by_state["failed"], by_state["pending"])
        assert status["chunks"] == sum(len(chunks_of(d.cur)) for d in live.values())
        assert status["deleted"] == len(self.model.docs) - len(live)
        assert status["active_claims"] == 0


TestIndexMachine = IndexMachine.TestCase
TestIndexMachine.settings = settings(max_examples=50, stateful_step_count=30, deadline=None,
                                     derandomize=True, database=None,
                                     suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.slow
class TestIndexMachineLong(IndexMachine.TestCase):  # type: ignore[misc, valid-type]
    settings = settings(max_examples=200, stateful_step_count=50, deadline=None,
                        suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module", autouse=True)
def report() -> Iterator[None]:
    """Prints what this module did at its end (pytest -s), for docs/RELIABILITY.md."""
    yield
    print(f"\nstate machine totals: {dict(STATS)}")


def test_readded_document_whose_old_content_compact_dropped() -> None:
    """Found by the long run: a deleted document keeps pointing at its old served content; compact drops
    that content; the id comes back with a text that fails, and another id brings the old text back as
    a content that is not done. The re-added id must not be served (it has no vector)."""
    m = IndexMachine()
    try:
        m.put("d0", "bad: one")
        m.sync(delete_missing=False)  # served: d0 -> "bad: one" (the embedder is healthy)
        m.delete("d0")
        m.sync(delete_missing=True)  # d0 deleted, still pointing at "bad: one"
        m.compact()  # "bad: one" is referenced by no live document: dropped
        m.set_flaky(True)
        m.put("d0", "bad: two")
        m.sync(delete_missing=False)  # d0 is back; "bad: two" fails
        m.index_matches_model()
        m.put("d1", "bad: one")
        m.sync(delete_missing=False)  # "bad: one" is a content again, failed: no slot
        m.index_matches_model()
    finally:
        m.teardown()


def test_a_document_gone_from_the_source_but_kept_is_embedded_by_the_next_sync() -> None:
    """Found by the long run: a document whose content failed, re-queued by `retry`, then left out of
    the source of a sync without --delete-missing: it stays live and pending, and that sync embeds
    it. Killed after such a commit, the index serves it with its current text's vector."""
    m = IndexMachine()
    try:
        m.put("d3", "bad: one")
        m.set_flaky(True)
        m.sync(delete_missing=False)  # "bad: one" failed
        m.retry()
        m.set_flaky(False)
        m.delete("d3")  # left out of the source, not deleted from the index
        m.crash(delete_missing=False, point="mid-commit", nth=2,
                edits=[(f"d{i}", f"text number {i}") for i in (0, 1, 2, 4, 5)])
        m.index_matches_model()
        assert "d3" in served_vectors(m.index)
    finally:
        m.teardown()
