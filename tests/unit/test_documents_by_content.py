"""Documents find their content by its number (`documents.seq`, migrations/0010): the commit serves
the documents of the contents it embedded, and the status counts move them, through that number.

- `verify` reports a document whose number is not its content's, and `verify --repair` sets it again.
- `compact` frees numbers: a deleted document whose content it dropped keeps none, so that a new
  content given the same number later never reaches it, nor does a new content of its text.
"""

from __future__ import annotations

from pathlib import Path

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection
from indexer.settings import Settings

from helpers import FAKE_DIM, fake_vector, served
from manifest_surgery import Tamper

SETTINGS = Settings(chunk_rows=8, scan_batch=16)


def numbers(ix: Path) -> dict[str, tuple[int | None, bytes | None, int]]:
    """id -> (seq, ready_hash, deleted) of every document."""
    with Inspection.open(ix) as look:
        return {i: (d.seq, d.ready_hash, d.deleted) for i, d in look.documents().items()}


def test_verify_finds_a_document_numbered_wrong_and_repair_numbers_it_again(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    docs = [(f"d{i}", f"text {i}") for i in range(10)]
    indexer.sync(ix, docs, embedder=FakeEmbedder(FAKE_DIM), settings=SETTINGS)
    with Tamper.open(ix) as tamper:
        tamper.misnumber_document("d3")
    with indexer.open(ix, SETTINGS) as idx:
        report = idx.verify()
        assert report.problems == ["1 document(s) point at their content by a number (documents.seq) that "
                                   "is not its own"]
        idx.verify(repair=True)
        assert idx.verify().ok
    # numbered right again: a change of d3's text is served once embedded
    docs[3] = ("d3", "a new text")
    indexer.sync(ix, docs, embedder=FakeEmbedder(FAKE_DIM), settings=SETTINGS)
    assert served(ix)["d3"].tobytes() == fake_vector("a new text").tobytes()


def test_a_number_compact_freed_and_a_new_content_took_never_reaches_a_deleted_document(
        tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    embedder = FakeEmbedder(FAKE_DIM)
    # "gone for now" is the longest text: the last number (a scan numbers its new texts shortest first)
    indexer.sync(ix, [("a", "one"), ("b", "gone for now")], embedder=embedder, settings=SETTINGS)
    b_number = numbers(ix)["b"][0]
    assert b_number == max(seq for seq, _, _ in numbers(ix).values())
    indexer.sync(ix, [("a", "one")], embedder=embedder, settings=SETTINGS, delete_missing=True,
                 max_delete=1.0)
    with indexer.open(ix, SETTINGS) as idx:
        idx.compact()  # drops b's content: its number is free
    assert numbers(ix)["b"] == (None, None, 1)

    # c's text is new (the freed number); e has b's text again, a content of a new number
    indexer.sync(ix, [("a", "one"), ("c", "a new text"), ("e", "gone for now")], embedder=embedder,
                 settings=SETTINGS)
    got = numbers(ix)
    assert got["c"][0] == b_number  # the freed number, given again
    assert got["b"] == (None, None, 1)  # neither commit reached b
    with indexer.open(ix, SETTINGS) as idx:
        assert idx.verify().ok
    docs = [("a", "one"), ("b", "gone for now"), ("c", "a new text"), ("e", "gone for now")]
    indexer.sync(ix, docs, embedder=embedder, settings=SETTINGS)
    assert numbers(ix)["b"][0] == numbers(ix)["e"][0]
    got_vectors = served(ix)
    for key, text in docs:
        assert got_vectors[key].tobytes() == fake_vector(text).tobytes(), key
