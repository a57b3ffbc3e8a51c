"""`Index.export`: the vectors to .npy (ids beside them as JSON lines) or Parquet; the Arrow forms
that export and push share."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import IndexerError, UsageError

if TYPE_CHECKING:
    from .index import Index

EXPORT_FORMATS = ("npy", "parquet")
PARQUET_ROW_GROUP_BYTES = 8 << 20  # vectors per Parquet row group


def vector_schema(dim: int, dtype: np.dtype, chunks: bool = False) -> Any:
    """The Arrow schema of exported and pushed rows: a string id and a fixed-size list of the index's
    float type, its dimension long (what DuckDB, Polars, LanceDB read as a vector). With `chunks`, a
    row is a chunk: its number in the document and its character span [start, end) between them."""
    import pyarrow as pa

    span = [pa.field(name, kind, nullable=False)
            for name, kind in (("chunk", pa.int32()), ("start", pa.int64()), ("end", pa.int64()))]
    return pa.schema([pa.field("id", pa.string(), nullable=False), *(span if chunks else []),
                      pa.field("vector", pa.list_(pa.from_numpy_dtype(dtype), dim), nullable=False)])


def vector_array(block: np.ndarray) -> Any:
    """An (n, dim) matrix as an Arrow fixed-size list array, without copying the values."""
    import pyarrow as pa

    flat = np.ascontiguousarray(block).reshape(-1)
    # from_buffers wraps the memory as it is; pa.array converts float16 value by value (slow).
    values = pa.Array.from_buffers(pa.from_numpy_dtype(flat.dtype), len(flat), [None, pa.py_buffer(flat)])
    return pa.FixedSizeListArray.from_arrays(values, block.shape[1])


def read_ids(path: str | Path) -> list[str]:
    """The ids `Index.export` wrote to `path`, in row order."""
    with Path(path).open(encoding="ascii") as f:
        return [json.loads(line) for line in f]


def export(index: Index, out: Path, ids_out: str | Path | None, format: str | None, level: str) -> int:
    """`Index.export`."""
    if format is None:
        format = out.suffix.lower().lstrip(".")
        if format not in EXPORT_FORMATS:
            raise UsageError(f"cannot write {out}: export writes "
                             f"{' or '.join('.' + f for f in EXPORT_FORMATS)} files; give --out a name "
                             "ending in one of them")
    if format not in EXPORT_FORMATS:
        raise IndexerError(f"export format {format!r} is not known; choose one of "
                           f"{', '.join(EXPORT_FORMATS)}")
    if level not in ("documents", "chunks"):
        raise IndexerError(f"export level {level!r}: choose documents or chunks")
    for target in (out, ids_out):
        if target is not None and not Path(target).parent.is_dir():
            raise UsageError(f"cannot write {target}: the directory {Path(target).parent} does not "
                             "exist; create it first")
    if format == "parquet":
        if ids_out is not None:
            raise IndexerError("a Parquet export holds the ids in its id column; --ids is for .npy")
        if level == "chunks":
            raise IndexerError("a chunk-level export is written as .npy (with --ids for the chunks' "
                               "ids and spans); Parquet holds one row a document")
        return _export_parquet(index, out)
    chunks = index.chunks() if level == "chunks" else None
    ids, vecs = (chunks.ids, chunks.vectors) if chunks is not None else index.vectors()
    n = len(vecs)
    tmp = out.with_name(out.name + ".partial")
    matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=index.store.dtype, shape=(n, index.store.dim))
    step = index.store.chunk_rows * 64
    for start in range(0, n, step):
        vecs.read_into(slice(start, start + step), matrix[start:start + step])
    matrix.flush()
    del matrix
    tmp.replace(out)
    if ids_out is not None:
        if chunks is None:
            lines = (f"{json.dumps(i)}\n" for i in ids)  # ensure_ascii: \u2028, \x85 escaped too
        else:
            lines = (json.dumps({"id": i, "chunk": int(k), "start": int(a), "end": int(b)}) + "\n"
                     for i, k, a, b in zip(ids, chunks.ordinals, chunks.starts, chunks.ends, strict=True))
        with Path(ids_out).open("w", encoding="ascii", newline="\n") as f:
            f.writelines(lines)
    return n


def _export_parquet(index: Index, out: Path) -> int:
    """One row group per step of rows, each read from the store and written before the next, so
    memory holds one step of vectors whatever the size of the index (and the ids of one snapshot).
    The Parquet writer holds a few copies of a row group while it encodes it (bench/RESULTS.md,
    export), so a step is kept to PARQUET_ROW_GROUP_BYTES of vectors."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids, vecs = index.vectors()
    n = len(vecs)
    schema = vector_schema(index.store.dim, index.store.dtype)
    tmp = out.with_name(out.name + ".partial")
    step = max(1, PARQUET_ROW_GROUP_BYTES // (index.store.dim * index.store.dtype.itemsize))
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for start in range(0, n, step):
                block = vecs[start:start + step]  # checked, and followed across a compact
                writer.write_batch(pa.record_batch(
                    [pa.array(ids[start:start + step], pa.string()), vector_array(block)],
                    schema=schema), row_group_size=step)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return n
