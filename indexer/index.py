"""An index directory: manifest.sqlite + vectors.zarr + index.toml, and what can be asked of it."""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import shutil
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import EmbeddingConfig, read_config, write_config
from .errors import EmbeddingError, IndexerError, IndexNotFoundError, StoreError
from .manifest import Manifest
from .search import (
    ChunkRows,
    Hit,
    check_k,
    load_query_embedder,
    query_texts,
    search_rows,
    served_texts,
    warn_long_queries,
)
from .settings import Settings
from .sources import open_sources
from .store import VectorStore
from .vectors import (
    Chunks,
    DocumentIds,
    VectorView,
    chunks_snapshot,
    documents_snapshot,
    read_rows,
    vectors_of,
)

__all__ = ["EXPORT_FORMATS", "CompactReport", "Index", "VerifyReport", "vector_array", "vector_schema"]

EXPORT_FORMATS = ("npy", "parquet")
PARQUET_ROW_GROUP_BYTES = 8 << 20  # vectors per Parquet row group

MANIFEST, STORE, CONFIG = "manifest.sqlite", "vectors.zarr", "index.toml"
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs",
                        "ceph", "fuse.s3fs", "fuse.gcsfuse", "lustre"}


def filesystem_type(path: Path) -> str | None:
    """The type of the mount holding `path`, from /proc/mounts (Linux); None where unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real, best, fstype = str(path.resolve()), "", None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def vector_schema(dim: int, dtype: np.dtype) -> Any:
    """The Arrow schema of exported and pushed rows: a string id and a fixed-size list of the index's
    float type, its dimension long (what DuckDB, Polars, LanceDB read as a vector)."""
    import pyarrow as pa

    return pa.schema([pa.field("id", pa.string(), nullable=False),
                      pa.field("vector", pa.list_(pa.from_numpy_dtype(dtype), dim), nullable=False)])


def vector_array(block: np.ndarray) -> Any:
    """An (n, dim) matrix as an Arrow fixed-size list array, without copying the values."""
    import pyarrow as pa

    flat = np.ascontiguousarray(block).reshape(-1)
    # from_buffers wraps the memory as it is; pa.array converts float16 value by value (slow).
    values = pa.Array.from_buffers(pa.from_numpy_dtype(flat.dtype), len(flat), [None, pa.py_buffer(flat)])
    return pa.FixedSizeListArray.from_arrays(values, block.shape[1])


@dataclass
class VerifyReport:
    ok: bool = True
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not wrong, but reclaimable by compact
    repaired: int = 0

    def problem(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems,
                "notes": self.notes, "repaired": self.repaired}


@dataclass
class CompactReport:
    contents_dropped: int = 0
    orphan_chunks_removed: int = 0
    partial_files_removed: int = 0
    chunks_packed: int = 0
    chunks_written: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Index:
    def __init__(self, path: Path, config: EmbeddingConfig, manifest: Manifest, store: VectorStore,
                 settings: Settings) -> None:
        self.path = path
        self.config = config
        self.manifest = manifest
        self.store = store
        self.settings = settings
        self._query_embedder: Any = None  # loaded on the first search

    @staticmethod
    def exists(path: str | Path) -> bool:
        return (Path(path) / CONFIG).is_file()

    @classmethod
    def create(cls, path: str | Path, config: EmbeddingConfig, settings: Settings | None = None) -> Index:
        """Make a new index bound to `config`. index.toml is written last: a directory without it is
        an index whose creation never finished, and is created again."""
        path, settings = Path(path), settings or Settings()
        if cls.exists(path):
            raise FileExistsError(f"{path} is already an index")
        path.mkdir(parents=True, exist_ok=True)
        # Two first syncs at once: one creates, the other waits here, then finds the index made.
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if cls.exists(path):
                raise FileExistsError(f"{path} is already an index")
            if (path / STORE).exists():
                shutil.rmtree(path / STORE)
            manifest = Manifest(path / MANIFEST, settings, create=True)
            store = VectorStore.create(path / STORE, config.dim, config.dtype, settings.chunk_rows)
            write_config(path / CONFIG, config)
        finally:
            os.close(fd)  # releases the lock
        return cls(path, config, manifest, store, settings)

    @classmethod
    def open(cls, path: str | Path, settings: Settings | None = None) -> Index:
        path, settings = Path(path), settings or Settings()
        if not cls.exists(path):
            what = "does not exist" if not path.exists() else f"has no {CONFIG}"
            raise IndexNotFoundError(f"no index at {path}: the directory {what}. "
                                     f"Create one with `indexer sync SOURCE --index {path}`")
        config = read_config(path / CONFIG)
        manifest = Manifest(path / MANIFEST, settings)
        store = VectorStore(path / STORE)
        if (store.dim, store.dtype.name) != (config.dim, config.dtype):
            raise StoreError(f"{path / STORE} holds {store.dtype.name} vectors of dim {store.dim} but "
                             f"{CONFIG} says {config.dtype} of dim {config.dim}; the index is damaged")
        return cls(path, config, manifest, store, settings)

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def network_filesystem(self) -> str | None:
        fstype = filesystem_type(self.path)
        return fstype if fstype in _NETWORK_FILESYSTEMS else None

    # -- reading --------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        out: dict[str, object] = {"index": str(self.path)}
        out.update(self.manifest.status_counts())
        out.update(model=self.config.model, dim=self.config.dim, dtype=self.config.dtype,
                   normalize=self.config.normalize, revision=self.config.revision,
                   runtime=self.config.runtime, truncate_dim=self.config.truncate_dim,
                   prompt=self.config.prompt, query_prompt=self.config.query_prompt,
                   template=self.config.template, chunking=self.config.chunking,
                   chunk_tokens=self.config.chunk_tokens, chunk_overlap=self.config.chunk_overlap,
                   chunk_rows=self.store.chunk_rows)
        return out

    def failures(self, limit: int = 100) -> list[tuple[str, str]]:
        return self.manifest.failures(limit)

    def _reader(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path / MANIFEST, isolation_level=None, check_same_thread=False)

    def vectors(self) -> tuple[DocumentIds, VectorView]:
        """(ids, vecs) of every live document with a vector, one row a document. A long document,
        embedded as chunks, is the L2-normalized mean of its chunk vectors (computed as its row is
        read). Nothing is read until used."""
        snapshot = documents_snapshot(self._reader())
        return DocumentIds(snapshot), VectorView(snapshot, self.store)

    def chunks(self) -> Chunks:
        """Every chunk of every live document with a vector: `.ids`, `.ordinals`, `.starts`, `.ends`
        (character span in the document's text) and `.vectors` (lazily read), row by row. A document
        that fits the model's window is one chunk. Nothing is read until used."""
        return Chunks(chunks_snapshot(self._reader()), self.store)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors of `ids`, in that order, as rows of `vectors()`. KeyError names the ids that have none."""
        return vectors_of(self.manifest.conn, list(ids), self.store)

    def export(self, out: str | Path, ids_out: str | Path | None = None, format: str | None = None,
               level: str = "documents") -> int:
        """Write the vectors to a .npy file (and the ids, one a line, to `ids_out`), or to a Parquet
        file with an id and a vector column. `format` ("npy" or "parquet") defaults to `out`'s
        extension. One row a document (`level="documents"`; a long one: the normalized mean of its
        chunks) or a chunk (`level="chunks"`, .npy only; `ids_out` then holds one JSON object a line,
        {"id", "chunk", "start", "end"}). Returns the number of rows."""
        out = Path(out)
        if format is None:
            format = "parquet" if out.suffix.lower() == ".parquet" else "npy"
        if format not in EXPORT_FORMATS:
            raise IndexerError(f"export format {format!r} is not known; choose one of "
                               f"{', '.join(EXPORT_FORMATS)}")
        if level not in ("documents", "chunks"):
            raise IndexerError(f"export level {level!r}: choose documents or chunks")
        if format == "parquet":
            if ids_out is not None:
                raise IndexerError("a Parquet export holds the ids in its id column; --ids is for .npy")
            if level == "chunks":
                raise IndexerError("a chunk-level export is written as .npy (with --ids for the chunks' "
                                   "ids and spans); Parquet holds one row a document")
            return self._export_parquet(out)
        chunks = self.chunks() if level == "chunks" else None
        ids, vecs = (chunks.ids, chunks.vectors) if chunks is not None else self.vectors()
        rows = vecs._rows()
        tmp = out.with_name(out.name + ".partial")
        matrix = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.store.dtype,
                                           shape=(len(rows.slots), self.store.dim))
        step = self.store.chunk_rows * 64
        for start in range(0, len(rows.slots), step):
            read_rows(self.store, rows, rows.slots[start:start + step], out=matrix[start:start + step])
        matrix.flush()
        del matrix
        tmp.replace(out)
        if ids_out is not None:
            if chunks is None:
                lines = (f"{i}\n" for i in ids)
            else:
                lines = (json.dumps({"id": i, "chunk": int(k), "start": int(a), "end": int(b)}) + "\n"
                         for i, k, a, b in zip(ids, chunks.ordinals, chunks.starts, chunks.ends, strict=True))
            Path(ids_out).write_text("".join(lines), encoding="utf-8")
        return len(rows.slots)

    # -- search (indexer/search.py) ------------------------------------------------------------

    def embed_queries(self, queries: Sequence[str]) -> np.ndarray:
        """(queries, dim) float32 vectors of `queries` from the index's own model and configuration
        (with its query prompt), normalized as its vectors are. ModelLoadError when that model cannot
        be loaded here as it was; a QueryTruncatedWarning for each query longer than the model's
        window."""
        texts = query_texts(queries)
        if self._query_embedder is None:
            self._query_embedder = load_query_embedder(self.config, self.path)
        warn_long_queries(self.config, texts)
        vectors = np.asarray(self._query_embedder.embed(texts), dtype=np.float32)
        bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
        if len(bad):
            raise EmbeddingError(f"model {self.config.model!r} gave a non-finite vector for query "
                                 f"{bad[0] + 1} ({texts[bad[0]]!r}); reword it")
        return vectors

    def search(self, queries: Sequence[str], k: int = 10) -> list[list[Hit]]:
        """The `k` documents most similar to each query, best first: every chunk scored exactly
        (cosine), a document ranked by its best chunk. One list of hits per query, in order."""
        rows = self._searchable(k)
        return search_rows(rows, self.embed_queries(queries), k, normalized=self.config.normalize)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """`search` for query vectors made elsewhere (e.g. by the API an index was embedded with)."""
        return search_rows(self._searchable(k), vectors, k, normalized=self.config.normalize)

    def passages(self, hits: Iterable[Hit], sources: Sequence[str], id_field: str = "id",
                 text_field: str = "text") -> dict[str, str]:
        """{id: text} for the hits' documents, re-read from `sources` (the manifest keeps no text once
        embedded), only where the source still holds the version the index serves."""
        records = itertools.chain.from_iterable(open_sources(sources, id_field, text_field))
        return served_texts(self.manifest.conn, (h.id for h in hits), records)

    def _searchable(self, k: int) -> ChunkRows:
        """The chunk rows search reads, checked before any model is loaded."""
        check_k(k)
        rows = self.chunks()
        if not len(rows.ids):
            counts = self.manifest.status_counts()
            raise IndexerError(f"index {self.path} has no embedded documents to search ({counts['pending']} "
                               f"pending); run `indexer sync` first")
        return rows

    def _export_parquet(self, out: Path) -> int:
        """One row group per step of rows, each read from the store and written before the next, so
        memory holds one step of vectors whatever the size of the index (and the ids of one snapshot).
        The Parquet writer holds a few copies of a row group while it encodes it (bench/RESULTS.md,
        export), so a step is kept to PARQUET_ROW_GROUP_BYTES of vectors."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        _, vecs = self.vectors()
        rows = vecs._rows()
        ids, slots = rows.ids, rows.slots
        schema = vector_schema(self.store.dim, self.store.dtype)
        tmp = out.with_name(out.name + ".partial")
        step = max(1, PARQUET_ROW_GROUP_BYTES // (self.store.dim * self.store.dtype.itemsize))
        try:
            with pq.ParquetWriter(tmp, schema) as writer:
                for start in range(0, len(slots), step):
                    block = read_rows(self.store, rows, slots[start:start + step])
                    writer.write_batch(pa.record_batch(
                        [pa.array(ids[start:start + step], pa.string()), vector_array(block)],
                        schema=schema), row_group_size=step)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
        return len(slots)

    # -- maintenance ----------------------------------------------------------------------------

    def retry(self) -> int:
        """Send failed contents back to pending; the next sync embeds them again."""
        return self.manifest.retry_failed()

    def verify(self, repair: bool = False) -> VerifyReport:
        report = VerifyReport()
        integrity = self.manifest.integrity_check()
        if integrity != "ok":
            report.problem(f"manifest integrity check: {integrity}")
        try:
            on_disk = read_config(self.path / CONFIG)
            if on_disk != self.config:
                report.problem(f"{CONFIG} changed while open: " + "; ".join(self.config.differences(on_disk)))
        except Exception as exc:
            report.problem(str(exc))
        bad: list[bytes] = []
        by_chunk: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
        for h, slot in self.manifest.done_slots():
            if slot is None:
                report.problem(f"content {h.hex()} is done without a slot")
                bad.append(h)
                continue
            by_chunk[slot // self.store.chunk_rows].append((h, slot))
        for chunk, rows in sorted(by_chunk.items()):
            state = self.store.chunk_state(chunk)
            report.checked += len(rows)
            if state != "ok":
                report.problem(f"chunk {chunk} is {state}: {len(rows)} done vector(s) lost")
                bad.extend(h for h, _ in rows)
                continue
            data = self.store.read_chunk(chunk)
            offsets = np.array([s for _, s in rows]) - chunk * self.store.chunk_rows
            finite = np.isfinite(data[offsets]).all(axis=1)
            for (h, slot), ok in zip(rows, finite, strict=True):
                if not ok:
                    report.problem(f"slot {slot} (content {h.hex()}) is done but its vector is not finite")
                    bad.append(h)
        for whole, what in self.manifest.broken_wholes():
            report.problem(f"long document content {whole.hex()} is done but {what}")
            bad.append(whole)
        referenced = set(by_chunk) | self.manifest.active_chunks()
        orphans = [c for c in self.store.chunk_files() if c not in referenced]
        if orphans:
            report.notes.append(f"{len(orphans)} chunk file(s) hold no done vector; `indexer compact` "
                                "removes them")
        partials = self.store.partial_files()
        if partials:
            report.notes.append(f"{len(partials)} unfinished .partial file(s); "
                                "`indexer compact` removes them")
        if repair and bad:
            report.repaired = self.manifest.requeue(bad, "re-queued by verify --repair")
        return report

    def compact(self) -> CompactReport:
        """Reclaim dead slots and orphan chunks, crash-safely: new chunks are written and made durable,
        then one transaction moves the slots, then the old chunk files are removed. A crash in between
        leaves only orphans, which the next compact removes."""
        active_claims = self.manifest.expire_claims()
        if active_claims:
            raise IndexerError(f"a sync is running on {self.path} ({active_claims} active claim(s)); "
                               "run compact when it has finished")
        report = CompactReport()
        report.contents_dropped = self.manifest.drop_unreferenced_contents()
        for p in self.store.partial_files():
            p.unlink(missing_ok=True)
            report.partial_files_removed += 1
        rows_per_chunk = self.store.chunk_rows
        by_chunk: dict[int, list[int]] = defaultdict(list)
        for _, slot in self.manifest.done_slots():
            by_chunk[slot // rows_per_chunk].append(slot)
        active = self.manifest.active_chunks()
        for chunk in list(self.store.chunk_files()):
            if chunk not in by_chunk and chunk not in active:
                self.store.delete_chunk(chunk)
                report.orphan_chunks_removed += 1
        sparse = sorted(c for c, slots in by_chunk.items() if len(slots) < rows_per_chunk)
        live = sorted(s for c in sparse for s in by_chunk[c])
        needed = -(-len(live) // rows_per_chunk)
        if needed >= len(sparse):
            return report
        moves: list[tuple[int, int]] = []
        for start in range(0, len(live), rows_per_chunk):
            group = live[start:start + rows_per_chunk]
            chunk = self.manifest.allocate_chunk(lambda c: self.store.ensure_chunks(c + 1))
            block = np.full((rows_per_chunk, self.store.dim), np.nan, dtype=self.store.dtype)
            block[:len(group)] = self.store.read_slots(group)
            self.store.write_chunk(chunk, block)
            moves.extend((old, chunk * rows_per_chunk + i) for i, old in enumerate(group))
            report.chunks_written += 1
        self.manifest.move_slots(moves)
        for chunk in sparse:
            self.store.delete_chunk(chunk)
        report.chunks_packed = len(sparse)
        return report
