"""The vector store's contract with Zarr: what VectorStore writes, plain zarr reads back identically.

Chunks are written whole by VectorStore (its own atomic file write, not zarr's), so these tests check
the bytes against an independent reader, `zarr.open_array`, in both dtypes; that unwritten rows read as
NaN (the fill value); that chunk_state sees missing and torn chunk files; and that the shape grows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from indexer.errors import StoreError
from indexer.store import VectorStore

DIM, ROWS = 6, 4


def block(seed: int, dtype: str = "float32", rows: int = ROWS) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, DIM)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_chunks_read_back_identically_by_plain_zarr(tmp_path: Path, dtype: str) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, dtype, ROWS)
    store.ensure_chunks(3)
    b0, b2 = block(0, dtype), block(2, dtype)
    b2[3] = np.nan  # an unused row of a partly filled chunk
    store.write_chunk(0, b0)
    store.write_chunk(2, b2)

    plain = zarr.open_array(tmp_path / "v.zarr", mode="r")
    assert plain.shape == (3 * ROWS, DIM)
    assert plain.chunks == (ROWS, DIM)
    assert np.dtype(plain.dtype) == np.dtype(dtype)
    data = np.asarray(plain[:])
    assert data.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(data[0:ROWS], b0)
    np.testing.assert_array_equal(data[2 * ROWS:3 * ROWS], b2)  # NaN == NaN for assert_array_equal
    # the never-written chunk 1 reads as the fill value, NaN: never as a plausible vector
    assert np.isnan(data[ROWS:2 * ROWS]).all()
    assert np.isnan(plain.fill_value)

    # and VectorStore's own memory-mapped reads agree, bit for bit
    reopened = VectorStore(tmp_path / "v.zarr")
    assert (reopened.dim, reopened.chunk_rows, reopened.dtype) == (DIM, ROWS, np.dtype(dtype))
    slots = [9, 0, 3, 8, 1]
    got = reopened.read_slots(slots)
    np.testing.assert_array_equal(got, data[slots])
    assert got.tobytes() == data[slots].tobytes()


def test_chunk_file_is_plain_little_endian_bytes(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(1)
    b = block(1)
    store.write_chunk(0, b)
    raw = store.chunk_path(0).read_bytes()
    assert raw == b.astype("<f4").tobytes()
    assert len(raw) == store.chunk_bytes == ROWS * DIM * 4


def test_store_is_uncompressed_with_nan_fill(tmp_path: Path) -> None:
    VectorStore.create(tmp_path / "v.zarr", DIM, "float16", ROWS)
    arr = zarr.open_array(tmp_path / "v.zarr", mode="r")
    assert arr.metadata.zarr_format == 3
    assert arr.compressors == ()
    assert arr.shape == (0, DIM)


def test_unknown_dtype_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="float64"):
        VectorStore.create(tmp_path / "v.zarr", DIM, "float64", ROWS)


def test_ensure_chunks_grows_the_shape_and_never_shrinks(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    assert store.rows() == 0
    store.ensure_chunks(2)
    assert store.rows() == 2 * ROWS
    assert zarr.open_array(tmp_path / "v.zarr", mode="r").shape == (2 * ROWS, DIM)
    store.ensure_chunks(1)
    assert store.rows() == 2 * ROWS
    store.write_chunk(1, block(5))
    store.ensure_chunks(5)
    assert store.rows() == 5 * ROWS
    # growing leaves written chunks as they were
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "v.zarr", mode="r")[ROWS:2 * ROWS], block(5))


def test_ensure_chunks_grows_spare_chunks_only_when_it_must_grow(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(1, spare=3)
    assert store.rows() == 4 * ROWS
    store.ensure_chunks(4, spare=3)  # fits: no growth, no spare
    assert store.rows() == 4 * ROWS
    # another process grew the array meanwhile: this one sees it when it next has to grow
    VectorStore(tmp_path / "v.zarr").ensure_chunks(6)
    store.ensure_chunks(5, spare=3)
    assert store.rows() == 6 * ROWS
    store.ensure_chunks(7, spare=1)
    assert store.rows() == 8 * ROWS
    # spare chunks are unwritten: they read as NaN, never as a vector
    assert np.isnan(zarr.open_array(tmp_path / "v.zarr", mode="r")[7 * ROWS:]).all()


def test_write_chunk_refuses_a_partial_block(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(1)
    with pytest.raises(StoreError, match="chunk 0"):
        store.write_chunk(0, block(0, rows=ROWS - 1))
    assert store.chunk_state(0) == "missing"


def test_chunk_state_detects_missing_and_torn_chunks(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(3)
    for c in range(3):
        store.write_chunk(c, block(c))
    assert [store.chunk_state(c) for c in range(3)] == ["ok"] * 3
    assert sorted(store.chunk_files()) == [0, 1, 2]

    store.chunk_path(1).unlink()
    with open(store.chunk_path(2), "r+b") as f:  # torn: a write cut short
        f.truncate(store.chunk_bytes - 7)
    assert [store.chunk_state(c) for c in range(3)] == ["ok", "missing", "torn"]
    with open(store.chunk_path(0), "ab") as f:  # too long is torn as well
        f.write(b"\0")
    assert store.chunk_state(0) == "torn"

    fresh = VectorStore(tmp_path / "v.zarr")
    for c in (0, 1, 2):
        with pytest.raises(StoreError, match=f"chunk {c} .* is (missing|torn)"):
            fresh.read_slots([c * ROWS])


def test_rewriting_a_chunk_replaces_it_whole(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(1)
    store.write_chunk(0, block(1))
    np.testing.assert_array_equal(store.read_slots([0, 1, 2, 3]), block(1))
    store.write_chunk(0, block(2))  # the cached map of the old file is dropped
    np.testing.assert_array_equal(store.read_slots([0, 1, 2, 3]), block(2))
    assert store.partial_files() == []


def test_partial_files_and_delete_chunk(tmp_path: Path) -> None:
    store = VectorStore.create(tmp_path / "v.zarr", DIM, "float32", ROWS)
    store.ensure_chunks(2)
    store.write_chunk(0, block(0))
    leftover = store.chunk_path(1).with_name("0.999.partial")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a chunk")
    assert store.partial_files() == [leftover]
    store.delete_chunk(0)
    assert store.chunk_state(0) == "missing"
    assert np.isnan(zarr.open_array(tmp_path / "v.zarr", mode="r")[0:ROWS]).all()


def test_opening_something_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not a readable Zarr array"):
        VectorStore(tmp_path / "nothing.zarr")
