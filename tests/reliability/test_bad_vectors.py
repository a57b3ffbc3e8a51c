"""A zero or non-finite vector is never stored as done, whatever the backend (issue 10, item 6).

A server that answered all-zero embeddings had 3,000 rows marked done and `verify` said ok. The check
lives in `_driver.write_chunk`, which every backend goes through: such a document fails with its
reason (an attempt counts: the answer for that input was wrong), the others are stored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer import Settings
from indexer._driver import unusable_vectors
from indexer.embedders import ModelInfo
from indexer.embedders.fake import FakeEmbedder

from openai_server import EmbeddingServer, fake_vector


class _OddVectors(FakeEmbedder):
    """A fake model (unit tests only): the fake vector, except for texts that ask for a bad one."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.info = ModelInfo(model="odd", revision="odd", dim=dim, normalize=False, max_seq_length=0)

    def embed(self, texts: list[str]) -> np.ndarray:
        out = super().embed(texts)
        for i, text in enumerate(texts):
            if text.startswith("ZERO"):
                out[i] = 0.0
            elif text.startswith("TINY"):  # a real float32 norm of 1e-8 underflows to 0 in float16
                out[i] *= 1e-8
            elif text.startswith("NAN"):
                out[i, 1] = np.nan
            elif text.startswith("HUGE"):  # finite in float32, inf in float16
                out[i] *= 1e6
        return out


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_zero_tiny_and_nonfinite_vectors_fail_with_a_reason(tmp_path: Path, dtype: str) -> None:
    bad = {"z1": "ZERO one", "z2": "ZERO two", "n1": "NAN one"}
    if dtype == "float16":
        bad |= {"t1": "TINY one", "h1": "HUGE one"}
    good = {f"g{i}": f"good text {i}" for i in range(20)}
    docs = [{"id": k, "text": v} for k, v in {**good, **bad}.items()]
    summary = indexer.sync(tmp_path / "idx", docs,
                           indexer.SyncOptions(dtype=dtype,
                                               settings=Settings(chunk_rows=8, retry_attempts=1)),
                           embedder=_OddVectors(16))
    assert (summary.embedded, summary.failed) == (len(good), len(bad))
    with indexer.open(tmp_path / "idx") as idx:
        reasons = dict(idx.failures())
        ids, vecs = idx.vectors()
        assert idx.verify().ok
        assert idx.status()["done"] == len(good)
    assert sorted(ids) == sorted(good)
    stored = np.asarray(vecs, np.float32)
    assert np.isfinite(stored).all() and (np.linalg.norm(stored, axis=1) > 0.5).all()
    assert set(reasons) == set(bad)
    for doc_id, reason in reasons.items():
        expected = "non-finite" if doc_id[0] in "nh" else "zero vector"
        assert expected in reason, (doc_id, reason)


def test_openai_server_answering_zeros_is_not_stored(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.zero_marker = "ZERO"  # a well-formed answer, all zeros for these inputs
    docs = [{"id": f"d{i}", "text": f"{'ZERO ' if i % 3 == 0 else ''}text {i}"} for i in range(60)]
    zero = {d["id"] for d in docs if d["text"].startswith("ZERO")}
    summary = indexer.sync(tmp_path / "idx", docs,
                           indexer.SyncOptions(model="text-embedding-3-small", backend="openai",
                                               backend_options={"base_url": server.base_url},
                                               settings=Settings(chunk_rows=16, retry_attempts=1)))
    assert (summary.embedded, summary.failed) == (len(docs) - len(zero), len(zero))
    with indexer.open(tmp_path / "idx") as idx:
        reasons = dict(idx.failures(limit=1000))
        ids, vecs = idx.vectors()
        assert idx.verify().ok
    assert set(reasons) == zero and all("zero vector" in r for r in reasons.values())
    text_of = {d["id"]: d["text"] for d in docs}
    np.testing.assert_array_equal(np.asarray(vecs), np.stack([fake_vector(text_of[i], 64) for i in ids]))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_the_vector_check_tells_bad_rows_from_rows_whose_squares_overflow(dtype: type) -> None:
    """The check sums each row's squares once: a finite row whose sum overflows (or underflows) is
    looked at again, and kept unless its norm really is (nearly) zero."""
    rows = np.random.default_rng(0).standard_normal((12, 8)).astype(np.float32)
    rows[1] = 0.0
    rows[2, 3] = np.nan
    rows[3, 0] = -np.inf
    rows[4] *= 1e-30  # squares underflow; the norm is nearly zero
    rows[5] *= np.float32(1e19 if dtype is np.float32 else 1e2)  # squares overflow; finite, kept
    rows[6] *= np.float32(1e-4 if dtype is np.float32 else 1e-3)  # squares underflow in float16
    bad = unusable_vectors(rows.astype(dtype))
    assert sorted(bad) == [1, 2, 3, 4]
    assert all("zero vector" in bad[i] for i in (1, 4)) and all("non-finite" in bad[i] for i in (2, 3))
