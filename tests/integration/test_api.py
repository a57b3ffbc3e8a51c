"""The public Python API: indexer.sync / indexer.open, vectors(), get(), status(), export(), progress."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer import IndexNotFoundError, Progress, Settings
from indexer.embedders.fake import FakeEmbedder

from helpers import FAKE_DIM, fake_vector

DOCS = {f"doc{i:02d}": f"document text {i} " + "word " * (i % 7) for i in range(21)}


def fresh_index(path: Path, settings: Settings, docs: dict[str, str] = DOCS,
                dtype: str | None = None) -> Path:
    indexer.sync(path, docs.items(), indexer.SyncOptions(settings=settings, dtype=dtype),
                 embedder=FakeEmbedder(FAKE_DIM))
    return path


@pytest.fixture
def ix(tmp_path: Path, small_settings: Settings) -> Path:
    return fresh_index(tmp_path / "index", small_settings)


def expected_matrix(ids: list[str], docs: dict[str, str] = DOCS) -> np.ndarray:
    return np.stack([fake_vector(docs[i]) for i in ids])


def test_vectors_rows_are_aligned_with_ids(ix: Path) -> None:
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        id_list = list(ids)
        assert sorted(id_list) == sorted(DOCS)
        assert len(ids) == len(vecs) == len(DOCS)
        assert vecs.shape == (len(DOCS), FAKE_DIM) and vecs.dtype == np.float32 and vecs.ndim == 2
        full = np.asarray(vecs)
        np.testing.assert_array_equal(full, expected_matrix(id_list))
        np.testing.assert_array_equal(full, idx.get(id_list))
        assert [ids[n] for n in range(len(ids))] == id_list
        assert ids[2:5] == id_list[2:5]
        for n, row in enumerate(vecs):
            np.testing.assert_array_equal(row, full[n])


def test_vectors_are_read_only(ix: Path) -> None:
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        with pytest.raises(TypeError):
            vecs[0] = np.zeros(FAKE_DIM)  # type: ignore[index]
        for part in (vecs[0], vecs[1:4], vecs[[0, 2]]):
            assert not part.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                part[...] = 0
        copy = np.asarray(vecs)
        if copy.flags.writeable:  # a copy: writing to it never reaches the index
            copy[:] = 0
        np.testing.assert_array_equal(idx.get(list(ids)), expected_matrix(list(ids)))


def test_slicing_and_fancy_indexing(ix: Path) -> None:
    with indexer.open(ix) as idx:
        _, vecs = idx.vectors()
        full = np.asarray(vecs)
        np.testing.assert_array_equal(vecs[3], full[3])
        np.testing.assert_array_equal(vecs[-1], full[-1])
        np.testing.assert_array_equal(vecs[np.int64(5)], full[5])
        np.testing.assert_array_equal(vecs[2:11], full[2:11])
        np.testing.assert_array_equal(vecs[::3], full[::3])
        np.testing.assert_array_equal(vecs[15:], full[15:])
        np.testing.assert_array_equal(vecs[[7, 0, 7, 20]], full[[7, 0, 7, 20]])
        np.testing.assert_array_equal(vecs[np.array([19, 1])], full[[19, 1]])
        mask = np.arange(len(full)) % 2 == 0
        np.testing.assert_array_equal(vecs[mask], full[mask])
        np.testing.assert_array_equal(vecs[1:4, :3], full[1:4, :3])
        np.testing.assert_array_equal(vecs[2, 5], full[2, 5])
        np.testing.assert_array_equal(vecs[-2, :3], full[-2, :3])
        assert vecs[[]].shape == (0, FAKE_DIM)
        np.testing.assert_array_equal(np.asarray(vecs, dtype=np.float64), full.astype(np.float64))


def test_ids_and_vectors_come_from_one_snapshot(ix: Path, small_settings: Settings) -> None:
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()  # nothing read yet
        ids_late, vecs_late = idx.vectors()

        changed = dict(DOCS)
        changed["doc03"] = "edited text"
        del changed["doc04"]
        changed["zzz"] = "a new document"
        summary = indexer.sync(ix, changed.items(),
                               indexer.SyncOptions(settings=small_settings, delete_missing=True),
                               embedder=FakeEmbedder(FAKE_DIM))
        assert summary.embedded == 2 and summary.deleted == 1

        # read after the sync committed: still the state of the moment vectors() was called
        id_list = list(ids)
        assert sorted(id_list) == sorted(DOCS)
        np.testing.assert_array_equal(np.asarray(vecs), expected_matrix(id_list, DOCS))
        # the vectors first, then the ids: the same
        full = np.asarray(vecs_late)
        np.testing.assert_array_equal(full, expected_matrix(list(ids_late), DOCS))

        # a new view sees the new state, and get() does too
        ids2, vecs2 = idx.vectors()
        assert sorted(ids2) == sorted(changed)
        np.testing.assert_array_equal(np.asarray(vecs2), expected_matrix(list(ids2), changed))
        np.testing.assert_array_equal(idx.get(["doc03"])[0], fake_vector("edited text"))


def test_get_returns_vectors_in_the_order_asked(ix: Path) -> None:
    with indexer.open(ix) as idx:
        asked = ["doc07", "doc01", "doc07", "doc20"]
        np.testing.assert_array_equal(idx.get(asked), expected_matrix(asked))
        assert idx.get([]).shape == (0, FAKE_DIM)


def test_get_raises_key_error_naming_the_missing_ids(ix: Path, small_settings: Settings) -> None:
    indexer.sync(ix, [(k, v) for k, v in DOCS.items() if k != "doc05"],
                 indexer.SyncOptions(settings=small_settings, delete_missing=True),
                 embedder=FakeEmbedder(FAKE_DIM))
    with indexer.open(ix) as idx:
        with pytest.raises(KeyError) as err:
            idx.get(["doc01", "no-such-id", "doc05"])
        message = str(err.value)
        assert "'no-such-id'" in message and "'doc05'" in message and "2 id(s)" in message
        assert "doc01" not in message


def test_status_keys(ix: Path) -> None:
    with indexer.open(ix) as idx:
        status = idx.status()
    assert {"documents", "pending", "done", "failed", "deleted", "model", "dim", "dtype"} <= set(status)
    assert (status["documents"], status["pending"], status["done"], status["failed"], status["deleted"]) \
        == (len(DOCS), 0, len(DOCS), 0, 0)
    assert (status["model"], status["dim"], status["dtype"]) == (f"fake:{FAKE_DIM}", FAKE_DIM, "float32")


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_export_writes_the_vectors_and_ids(tmp_path: Path, small_settings: Settings, dtype: str) -> None:
    ix = fresh_index(tmp_path / "index", small_settings, dtype=dtype)
    out, ids_out = tmp_path / "out" / "vectors.npy", tmp_path / "out" / "ids.txt"
    out.parent.mkdir()
    with indexer.open(ix) as idx:
        n = idx.export(out, ids_out)
        ids, vecs = idx.vectors()
        expected = np.asarray(vecs)
        id_list = list(ids)
    assert n == len(DOCS)
    exported = np.load(out)
    assert exported.dtype == np.dtype(dtype) and exported.shape == (len(DOCS), FAKE_DIM)
    np.testing.assert_array_equal(exported, expected)
    np.testing.assert_array_equal(exported, expected_matrix(id_list).astype(dtype))
    assert indexer.read_ids(ids_out) == id_list
    assert sorted(p.name for p in out.parent.iterdir()) == ["ids.txt", "vectors.npy"]  # no .partial


def test_sync_accepts_pairs_dicts_and_generators(tmp_path: Path, small_settings: Settings) -> None:
    ix = tmp_path / "index"
    summary = indexer.sync(ix, [("p1", "pair one"), ["p2", "pair two"]],
                           indexer.SyncOptions(settings=small_settings), embedder=FakeEmbedder(FAKE_DIM))
    assert (summary.new, summary.embedded) == (2, 2)

    dicts = [{"id": "d1", "text": "dict one", "meta": 1}, {"id": 7, "text": "integer id"}]
    indexer.sync(ix, dicts, indexer.SyncOptions(settings=small_settings), embedder=FakeEmbedder(FAKE_DIM))

    def generate() -> Iterator[tuple[str, str]]:
        for i in range(20):  # more than one scan batch and one chunk
            yield f"g{i}", f"generated {i}"

    summary = indexer.sync(ix, generate(), indexer.SyncOptions(settings=small_settings),
                           embedder=FakeEmbedder(FAKE_DIM))
    assert (summary.scanned, summary.new, summary.embedded) == (20, 20, 20)

    custom = [{"key": "c1", "body": "custom fields"}]
    indexer.sync(ix, custom, indexer.SyncOptions(id_field="key", text_field="body", settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))

    expected = {"p1": "pair one", "p2": "pair two", "d1": "dict one", "7": "integer id",
                "c1": "custom fields", **{f"g{i}": f"generated {i}" for i in range(20)}}
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        assert sorted(ids) == sorted(expected)
        np.testing.assert_array_equal(np.asarray(vecs), np.stack([fake_vector(expected[i]) for i in ids]))


def test_sync_skips_unusable_items_with_a_warning(tmp_path: Path, small_settings: Settings) -> None:
    summary = indexer.sync(tmp_path / "index", [("a", "fine"), 42, ("b",), {"id": "c"}],
                           indexer.SyncOptions(settings=small_settings), embedder=FakeEmbedder(FAKE_DIM))
    assert (summary.scanned, summary.skipped, summary.embedded) == (1, 3, 1)
    assert len(summary.warnings) == 3 and "item 2" in summary.warnings[0]


def test_on_progress_receives_progress(tmp_path: Path, small_settings: Settings) -> None:
    seen: list[Progress] = []
    docs = [(f"x{i}", f"progress text {i}") for i in range(30)]
    summary = indexer.sync(tmp_path / "index", docs, indexer.SyncOptions(settings=small_settings),
                           embedder=FakeEmbedder(FAKE_DIM), on_progress=seen.append)
    assert seen and all(isinstance(p, Progress) for p in seen)
    for p in seen:
        assert p.processed >= 0 and p.docs_per_s >= 0 and p.rss_mb > 0
        assert p.eta_s is None or p.eta_s >= 0
        assert p.total is None or p.processed <= p.total
    scan = [p for p in seen if p.phase == "scan"]
    embed = [p for p in seen if p.phase == "embed"]
    assert scan and embed and len(scan) + len(embed) == len(seen)
    assert [p.processed for p in scan] == [16, 30]  # one report a scan batch of 16
    assert [p.processed for p in embed] == [8, 16, 24, 30]  # one report a committed claim of 8
    assert all(p.total == 30 for p in embed)
    assert embed[-1].eta_s == 0
    assert summary.claims == 4


def test_open_a_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="no index at"):
        indexer.open(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_float16_index_serves_float16(tmp_path: Path, small_settings: Settings) -> None:
    ix = fresh_index(tmp_path / "index", small_settings, dtype="float16")
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        assert vecs.dtype == np.float16 and idx.status()["dtype"] == "float16"
        np.testing.assert_array_equal(np.asarray(vecs), expected_matrix(list(ids)).astype(np.float16))
