"""Exact search (indexer/search.py, Index.search): ranked documents equal a brute-force numpy ranking.

The algorithm tests feed `search_rows` in-memory chunk rows (`_MemoryRows`, a stand-in for an index's
chunk rows documented as such: arrays instead of the store) to reach cases a real index makes only with
chunking: many chunks per document, spread over blocks. The index tests use real indexes on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer.errors import IndexerError, ModelLoadError
from indexer.search import Hit, search_rows
from indexer.settings import Settings


@dataclass
class _MemoryRows:
    """Chunk rows held in numpy arrays (not an index): the test's stand-in for `idx.chunks()`."""

    ids: list[str]
    ordinals: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    vectors: np.ndarray


def _rows(n_docs: int, dim: int, rng: np.random.Generator, *, max_chunks: int = 6,
          dtype: str = "float32", normalized: bool = True, shuffle: bool = True) -> _MemoryRows:
    doc_of = np.repeat(np.arange(n_docs), rng.integers(1, max_chunks + 1, n_docs))
    ordinals = np.concatenate([np.arange(c) for c in np.bincount(doc_of)])
    order = rng.permutation(len(doc_of)) if shuffle else np.arange(len(doc_of))
    doc_of, ordinals = doc_of[order], ordinals[order]
    v = rng.standard_normal((len(doc_of), dim)).astype(np.float32)
    if normalized:
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    else:
        v *= rng.uniform(0.1, 10, (len(v), 1)).astype(np.float32)
    return _MemoryRows([f"doc{d}" for d in doc_of], ordinals, ordinals * 100, ordinals * 100 + 90,
                       v.astype(dtype))


def _brute_force(rows: _MemoryRows, q: np.ndarray, k: int, normalized: bool = True
                 ) -> list[list[tuple[str, float, int]]]:
    """Every row scored at once; each document's best row; the k best documents."""
    m = rows.vectors.astype(np.float64)
    q = q.astype(np.float64)
    scores = q @ m.T
    if not normalized:
        scores /= np.linalg.norm(q, axis=1, keepdims=True) * np.linalg.norm(m, axis=1)
    out = []
    for s in scores:
        best: dict[str, tuple[float, int]] = {}
        for r in np.argsort(-s, kind="stable"):
            if np.isfinite(s[r]) and rows.ids[r] not in best:
                best[rows.ids[r]] = (float(s[r]), int(rows.ordinals[r]))
        out.append([(d, sc, o) for d, (sc, o) in list(best.items())[:k]])
    return out


def _assert_same(hits: list[list[Hit]], expected: list[list[tuple[str, float, int]]]) -> None:
    assert len(hits) == len(expected)
    for got, want in zip(hits, expected, strict=True):
        assert [h.id for h in got] == [d for d, _, _ in want]
        assert [h.chunk for h in got] == [o for _, _, o in want]
        np.testing.assert_allclose([h.score for h in got], [s for _, s, _ in want], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block_rows", [1, 7, 64, None])
@pytest.mark.parametrize("k", [1, 5, 30])
def test_many_chunks_per_document_rank_by_best_chunk(block_rows: int | None, k: int) -> None:
    rng = np.random.default_rng(k)
    rows = _rows(80, 12, rng)
    q = rng.standard_normal((9, 12)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    hits = search_rows(rows, q, k, block_rows=block_rows)
    _assert_same(hits, _brute_force(rows, q, k))
    for got in hits:
        assert len({h.id for h in got}) == len(got) == k  # documents, not chunks
        for h in got:
            assert (h.start, h.end) == (h.chunk * 100, h.chunk * 100 + 90)


def test_one_document_owning_the_best_rows_does_not_hide_others() -> None:
    # doc0 has 50 chunks close to the query, so a block's best rows are all doc0's: the block must
    # still give its other documents
    rng = np.random.default_rng(1)
    q = np.ones((1, 8), np.float32) / np.sqrt(8)
    near = q + 0.01 * rng.standard_normal((50, 8)).astype(np.float32)
    far = rng.standard_normal((20, 8)).astype(np.float32)
    v = np.concatenate([near, far])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = ["doc0"] * 50 + [f"other{i}" for i in range(20)]
    rows = _MemoryRows(ids, np.r_[np.arange(50), np.zeros(20, int)], np.zeros(70, int), np.ones(70, int), v)
    for block_rows in (64, None):
        hits = search_rows(rows, q, 5, block_rows=block_rows)
        _assert_same(hits, _brute_force(rows, q, 5))
        assert hits[0][0].id == "doc0" and len(hits[0]) == 5


def test_fewer_documents_than_k_returns_them_all() -> None:
    rng = np.random.default_rng(2)
    rows = _rows(3, 8, rng)
    q = rows.vectors[:2].astype(np.float32)
    hits = search_rows(rows, q, 10, block_rows=4)
    assert [len(h) for h in hits] == [3, 3]
    _assert_same(hits, _brute_force(rows, q, 10))


def test_nan_rows_are_never_returned() -> None:
    rng = np.random.default_rng(3)
    rows = _rows(40, 8, rng, max_chunks=1, shuffle=False)
    rows.vectors[::3] = np.nan  # unwritten slots read as NaN
    rows.vectors[1, 5] = np.nan  # and a damaged row: one value is enough
    rows.vectors[2, 0] = np.inf
    q = rng.standard_normal((4, 8)).astype(np.float32)
    hits = search_rows(rows, q, 40, block_rows=5)
    unwritten = {rows.ids[i] for i in [*range(0, 40, 3), 1, 2]}
    for got in hits:
        assert len(got) == 40 - len(unwritten)
        assert not unwritten & {h.id for h in got}
        assert all(np.isfinite(h.score) for h in got)
    _assert_same(hits, _brute_force(rows, q, 40))


def test_float16_rows_are_upcast_per_block() -> None:
    rng = np.random.default_rng(4)
    rows = _rows(60, 16, rng, dtype="float16")
    q = rng.standard_normal((3, 16)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    _assert_same(search_rows(rows, q, 8, block_rows=10), _brute_force(rows, q, 8))


def test_unnormalized_rows_score_by_cosine() -> None:
    rng = np.random.default_rng(5)
    rows = _rows(50, 8, rng, normalized=False)
    q = rng.standard_normal((3, 8)).astype(np.float32) * 7
    hits = search_rows(rows, q, 6, normalized=False, block_rows=9)
    _assert_same(hits, _brute_force(rows, q, 6, normalized=False))
    assert all(-1.0001 <= h.score <= 1.0001 for got in hits for h in got)


@pytest.mark.parametrize("k", [0, -1, 2.5, True])
def test_k_must_be_a_positive_whole_number(k: object) -> None:
    rows = _rows(3, 4, np.random.default_rng(0))
    with pytest.raises(IndexerError, match="k must be"):
        search_rows(rows, np.ones((1, 4), np.float32), k)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0])
def test_query_vectors_that_are_zero_or_not_finite_are_refused(bad: float) -> None:
    rows = _rows(3, 4, np.random.default_rng(0))
    q = np.ones((2, 4), np.float32)
    q[1] = 0 if bad == 0 else q[1]
    q[1, 2] = bad
    for normalized in (True, False):
        with pytest.raises(IndexerError, match="query vector 2 is zero or not finite"):
            search_rows(rows, q, 1, normalized=normalized)


def test_query_vectors_of_another_dimension_are_refused() -> None:
    rows = _rows(3, 4, np.random.default_rng(0))
    with pytest.raises(IndexerError, match="5 dims but the index's have 4"):
        search_rows(rows, np.ones((1, 5), np.float32), 1)


# -- on an index ------------------------------------------------------------------------------------

def _text(i: int) -> str:
    return f"document {i}: " + "word " * (i % 7 + 1)


def _index(tmp_path: Path, n: int, settings: Settings, **kw: object) -> Path:
    indexer.sync(tmp_path / "ix", [(f"d{i}", _text(i)) for i in range(n)],
                 indexer.SyncOptions(settings=settings, **kw))  # type: ignore[arg-type]
    return tmp_path / "ix"


def test_index_search_equals_brute_force_over_vectors(tmp_path: Path, small_settings: Settings) -> None:
    ix = _index(tmp_path, 45, small_settings, model="fake:16")
    queries = [_text(3), "something else", "word"]
    with indexer.open(ix) as idx:
        hits = idx.search(queries, k=7)
        q = idx.embed_queries(queries)
        ids, vecs = idx.vectors()
        scores = q @ np.asarray(vecs).T
    for got, s in zip(hits, scores, strict=True):
        best = np.argsort(-s, kind="stable")[:7]
        assert [h.id for h in got] == [ids[i] for i in best]
        np.testing.assert_allclose([h.score for h in got], s[best], rtol=1e-5)
        assert all(h.chunk == 0 and h.start == 0 for h in got)
    # today's rows: one per document, spanning its whole text
    assert all(h.end == len(_text(int(h.id[1:]))) for got in hits for h in got)
    assert hits[0][0].id == "d3" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_embed_queries_equals_the_models_vectors(tmp_path: Path, small_settings: Settings,
                                                  fake_vector: object) -> None:
    ix = _index(tmp_path, 5, small_settings, model="fake:16")
    with indexer.open(ix) as idx:
        q = idx.embed_queries(["a query", "another"])
    assert q.dtype == np.float32 and q.shape == (2, 16)
    np.testing.assert_array_equal(q[0], fake_vector("a query"))  # type: ignore[operator]


def test_float16_index_search(tmp_path: Path, small_settings: Settings) -> None:
    ix = _index(tmp_path, 30, small_settings, model="fake:16", dtype="float16")
    with indexer.open(ix) as idx:
        hits = idx.search([_text(4)], k=3)
        ids, vecs = idx.vectors()
        s = idx.embed_queries([_text(4)]) @ np.asarray(vecs, np.float32).T
    assert [h.id for h in hits[0]] == [ids[i] for i in np.argsort(-s[0])[:3]]
    assert hits[0][0].id == "d4"


def test_search_an_empty_index_says_so(tmp_path: Path, small_settings: Settings) -> None:
    ix = _index(tmp_path, 0, small_settings, model="fake:16")
    with indexer.open(ix) as idx, pytest.raises(IndexerError, match="no embedded documents"):
        idx.search(["x"])


def test_empty_query_is_refused(tmp_path: Path, small_settings: Settings) -> None:
    ix = _index(tmp_path, 3, small_settings, model="fake:16")
    with indexer.open(ix) as idx, pytest.raises(IndexerError, match="query 2 is empty"):
        idx.search(["fine", "  "])


def test_a_model_loading_with_other_weights_is_refused(tmp_path: Path, small_settings: Settings) -> None:
    from tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    ix = _index(tmp_path, 4, small_settings, model=str(model))
    build_tiny_model(tmp_path / "m", seed=1)  # the same path now holds other weights
    with indexer.open(ix) as idx, pytest.raises(ModelLoadError, match="revision: index has"):
        idx.search(["document"])


def test_a_model_that_cannot_be_loaded_is_refused(tmp_path: Path, small_settings: Settings) -> None:
    import shutil

    from tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    ix = _index(tmp_path, 4, small_settings, model=str(model))
    shutil.rmtree(tmp_path / "m")
    with indexer.open(ix) as idx, pytest.raises(ModelLoadError, match="cannot load model"):
        idx.search(["document"])


def test_api_indexes_point_to_search_vectors(tmp_path: Path, small_settings: Settings) -> None:
    import dataclasses

    from indexer.config import read_config, write_config

    ix = _index(tmp_path, 4, small_settings, model="fake:16")
    config = read_config(ix / "index.toml")
    write_config(ix / "index.toml", dataclasses.replace(config, revision="api:127.0.0.1"))
    with indexer.open(ix) as idx:
        with pytest.raises(ModelLoadError, match="search_vectors"):
            idx.search(["document"])
        q = np.asarray(idx.vectors()[1][0:1])
        assert idx.search_vectors(q, k=1)[0][0].score == pytest.approx(1.0, abs=1e-5)


def test_search_after_changes_reads_scattered_slots(tmp_path: Path, small_settings: Settings) -> None:
    ix = _index(tmp_path, 40, small_settings, model="fake:16")
    changed = [(f"d{i}", _text(i) + (" changed" if i % 3 == 0 else "")) for i in range(40) if i % 5]
    indexer.sync(ix, changed,
                 indexer.SyncOptions(settings=small_settings, model="fake:16", delete_missing=True))
    queries = [_text(6) + " changed", _text(7), "word word"]
    with indexer.open(ix) as idx:
        hits = idx.search(queries, k=9)
        ids, vecs = idx.vectors()
        scores = idx.embed_queries(queries) @ np.asarray(vecs).T
    assert len(ids) == 32
    for got, s in zip(hits, scores, strict=True):
        best = np.argsort(-s, kind="stable")[:9]
        assert [h.id for h in got] == [ids[i] for i in best]
    assert hits[0][0].id == "d6" and hits[1][0].id == "d7"


# -- chunked indexes ----------------------------------------------------------------------------------

def _long_text(i: int) -> str:
    return "\n\n".join(f"Doc {i} part {p} says {' '.join(f'w{(i * 7 + p * 3 + j) % 23}' for j in range(6))}."
                       for p in range(5))


def test_chunked_index_ranks_documents_by_their_best_chunk(tmp_path: Path, small_settings: Settings) -> None:
    docs = {f"long{i}": _long_text(i) for i in range(12)} | {"short": "Doc short says hello."}
    indexer.sync(tmp_path / "ix", docs.items(),
                 indexer.SyncOptions(settings=small_settings, model="fake:16", chunk_tokens=12))
    with indexer.open(tmp_path / "ix") as idx:
        chunks = idx.chunks()
        ids, ordinals = list(chunks.ids), chunks.ordinals
        assert len(ids) > 2 * len(docs)  # several chunks a long document
        matrix = np.asarray(chunks.vectors)
        # a query equal to the text of one chunk finds that chunk's document, at that chunk's span
        row = next(r for r in range(len(ids)) if ids[r] == "long5" and ordinals[r] == 2)
        passage = docs["long5"][chunks.starts[row]:chunks.ends[row]]
        queries = [passage, "w3 w4 w5", "Doc short says hello."]
        hits = idx.search(queries, k=6)
        scores = idx.embed_queries(queries) @ matrix.T
    assert hits[0][0].id == "long5" and hits[0][0].chunk == 2
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-5)
    assert (hits[0][0].start, hits[0][0].end) == (chunks.starts[row], chunks.ends[row])
    assert hits[2][0].id == "short" and (hits[2][0].chunk, hits[2][0].start) == (0, 0)
    for got, s in zip(hits, scores, strict=True):  # brute force: each document's best chunk
        best: dict[str, tuple[float, int]] = {}
        for r in np.argsort(-s, kind="stable"):
            best.setdefault(ids[r], (float(s[r]), int(ordinals[r])))
        want = sorted(best.items(), key=lambda item: -item[1][0])[:6]
        assert [(h.id, h.chunk) for h in got] == [(d, o) for d, (_, o) in want]
        np.testing.assert_allclose([h.score for h in got], [sc for _, (sc, _) in want], rtol=1e-5)


def test_a_query_longer_than_the_window_is_embedded_with_a_warning(tmp_path: Path,
                                                                    small_settings: Settings) -> None:
    from indexer.search import QueryTruncatedWarning

    from tiny_model import MAX_SEQ_LENGTH, build_tiny_model

    model = build_tiny_model(tmp_path / "m")
    ix = _index(tmp_path, 4, small_settings, model=str(model))
    long_query = " ".join(["function"] * (MAX_SEQ_LENGTH + 5))
    with indexer.open(ix) as idx:
        with pytest.warns(QueryTruncatedWarning, match="query 2 is longer than the 64-token window"):
            hits = idx.search(["function", long_query], k=2)
        assert len(hits[1]) == 2
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error", QueryTruncatedWarning)
            idx.search(["function " * (MAX_SEQ_LENGTH - 10)], k=1)  # fits: no warning


def test_queries_get_the_query_prompt_and_not_the_document_prompt(tmp_path: Path, small_settings: Settings,
                                                                 fake_vector: object) -> None:
    indexer.sync(tmp_path / "ix", [("a", "apples"), ("b", "bananas")],
                 indexer.SyncOptions(settings=small_settings, model="fake:16", prompt="passage: ",
                                     query_prompt="query: "))
    with indexer.open(tmp_path / "ix") as idx:
        q = idx.embed_queries(["apples"])
        np.testing.assert_array_equal(q[0], fake_vector("query: apples"))  # type: ignore[operator]
        ids, vecs = idx.vectors()
        stored = dict(zip(ids, np.asarray(vecs), strict=True))
        np.testing.assert_array_equal(stored["a"], fake_vector("passage: apples"))  # type: ignore[operator]
        hits = idx.search(["apples"], k=2)[0]
    want = sorted(((float(stored[d] @ q[0]), d) for d in stored), reverse=True)
    assert [h.id for h in hits] == [d for _, d in want]
