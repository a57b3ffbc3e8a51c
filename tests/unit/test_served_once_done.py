"""A document serves its own content once that is done (migrations/0011): a commit marks contents done
without rewriting their documents, and `documents.ready_hash` only holds what a changed document
served before, while its new content waits. What must still hold:

- a changed document serves its old vector until the new one is done, then the new one (get, vectors,
  search reads, push: every reader takes the served content the same way, SERVED_HASH);
- a content sent back to pending (`verify --repair`) stops being served, and its documents do not fall
  back to an older version they served before;
- `compact` forgets the older version once the new one is served, as it did when commits rewrote
  ready_hash.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection, content_hash
from indexer.settings import Settings

from helpers import FAKE_DIM, fake_vector, served

SETTINGS = Settings(chunk_rows=4, scan_batch=8)


def sync(ix: Path, docs: dict[str, str]) -> None:
    indexer.sync(ix, list(docs.items()), embedder=FakeEmbedder(FAKE_DIM), settings=SETTINGS)


def test_a_changed_document_serves_its_new_content_once_done_and_never_an_older_one(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    sync(ix, {"a": "first version", "b": "other"})
    sync(ix, {"a": "second version", "b": "other"})
    got = served(ix)
    assert np.array_equal(got["a"], fake_vector("second version"))
    with indexer.open(ix, SETTINGS) as idx:
        assert idx.get(["a"])[0] is not None and np.array_equal(idx.get(["a"])[0], got["a"])
        # The commit left the document row alone: it still names the version it served before.
        before = Inspection(idx.manifest.conn).documents()["a"].ready_hash
        assert before == content_hash("first version")
        # The second version's vector is bad: repair sends it back to pending. "a" serves nothing now,
        # not the first version's vector.
        assert idx.manifest.requeue([content_hash("second version")], "bad vector") == 1
    got = served(ix)
    assert "a" not in got and np.array_equal(got["b"], fake_vector("other"))
    sync(ix, {"a": "second version", "b": "other"})
    assert np.array_equal(served(ix)["a"], fake_vector("second version"))


def test_compact_forgets_the_version_a_document_served_before(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    sync(ix, {"a": "first version", "b": "other"})
    sync(ix, {"a": "second version", "b": "other"})
    with indexer.open(ix, SETTINGS) as idx:
        idx.compact()
        assert idx.verify().ok
    with Inspection.open(ix) as look:
        kept = set(look.contents())
    assert kept == {content_hash("second version"), content_hash("other")}
    got = served(ix)
    assert np.array_equal(got["a"], fake_vector("second version")) and len(got) == 2
