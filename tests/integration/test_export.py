"""`indexer export --out FILE.parquet`: id and vector columns equal to `vectors()` bit for bit, for float32
and float16 indexes, written as several row groups; read back with pyarrow and DuckDB."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import indexer
from indexer.settings import Settings

from helpers import invoke, write_jsonl

SETTINGS = Settings(chunk_rows=8)
N = 300


def make_index(tmp_path: Path, dtype: str) -> Path:
    ix = tmp_path / f"ix-{dtype}"
    docs = [(f"doc-{i:04d}", f"text number {i}") for i in range(N)]
    indexer.sync(ix, docs, indexer.SyncOptions(model="fake:16", dtype=dtype, settings=SETTINGS))
    # a deleted and a changed document: the export holds what is served now, nothing else
    indexer.sync(ix, [*docs[1:-1], ("doc-0005", "changed")],
                 indexer.SyncOptions(delete_missing=True, settings=SETTINGS))
    return ix


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_parquet_round_trip_equals_vectors_bit_for_bit(tmp_path: Path, dtype: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    ix = make_index(tmp_path, dtype)
    # row groups of 128 rows, so that the 298 rows take three
    monkeypatch.setattr("indexer._export.PARQUET_ROW_GROUP_BYTES", 128 * 16 * np.dtype(dtype).itemsize)
    out = tmp_path / "vectors.parquet"
    r = invoke("export", str(ix), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert f"exported {N - 2} vectors to {out}" in r.stderr
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        expected_ids, expected = list(ids), np.asarray(vecs)
    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == N - 2 and meta.num_row_groups == 3
    table = pq.read_table(out)
    assert table.schema.field("vector").type == pa.list_(pa.from_numpy_dtype(np.dtype(dtype)), 16)
    assert table.column("id").to_pylist() == expected_ids
    got = table.column("vector").combine_chunks().values.to_numpy().reshape(-1, 16)
    assert got.dtype == np.dtype(dtype)
    assert got.tobytes() == expected.tobytes()
    assert "doc-0000" not in expected_ids and not list(tmp_path.glob("*.partial"))


def test_duckdb_reads_the_export(tmp_path: Path) -> None:
    duckdb = pytest.importorskip("duckdb")
    ix = make_index(tmp_path, "float32")
    out = tmp_path / "v.parquet"
    with indexer.open(ix) as idx:
        assert idx.export(out) == N - 2
        ids, vecs = idx.vectors()
        expected = dict(zip(list(ids), np.asarray(vecs), strict=True))
    rows = duckdb.sql(f"SELECT id, vector FROM '{out}' ORDER BY id").fetchall()
    assert [r[0] for r in rows] == sorted(expected)
    for doc_id, vector in rows:
        assert np.asarray(vector, dtype=np.float32).tobytes() == expected[doc_id].tobytes()
    # the README's query: nearest by cosine to a document's own vector is that document
    query = expected["doc-0042"].tolist()
    best = duckdb.execute(f"SELECT id, list_cosine_similarity(vector, $q) AS score FROM '{out}' "
                          "ORDER BY score DESC LIMIT 1", {"q": query}).fetchall()
    assert best[0][0] == "doc-0042" and best[0][1] == pytest.approx(1.0, abs=1e-6)


def test_format_flag_and_refusals(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", {"a": "alpha", "b": "beta"})
    ix = str(tmp_path / "ix")
    assert invoke("sync", str(src), "--index", ix, "--model", "fake:16").exit_code == 0
    r = invoke("export", ix, "--out", str(tmp_path / "v.bin"), "--format", "parquet")
    assert r.exit_code == 0, r.output
    assert sorted(pq.read_table(tmp_path / "v.bin").column("id").to_pylist()) == ["a", "b"]
    r = invoke("export", ix, "--out", str(tmp_path / "v.npy"), "--ids", str(tmp_path / "ids.txt"))
    assert r.exit_code == 0 and np.load(tmp_path / "v.npy").shape == (2, 16)
    r = invoke("export", ix, "--out", str(tmp_path / "v.parquet"), "--ids", str(tmp_path / "ids.txt"))
    assert r.exit_code == 1 and "--ids is for .npy" in r.stderr
    assert invoke("export", ix, "--out", "x", "--format", "csv").exit_code == 2
