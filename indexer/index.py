"""An index directory: manifest.sqlite + vectors.zarr + index.toml, and what can be asked of it."""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from . import _compact, _export, _verify
from ._compact import CompactReport
from ._export import EXPORT_FORMATS, read_ids, vector_array, vector_schema
from ._index_dir import (
    CONFIG,
    MANIFEST,
    STORE,
    creation_lock,
    load_config,
    load_store,
    network_filesystem,
    not_an_index,
    remove_unfinished_store,
    store_without_manifest,
)
from ._lock import maintenance_lock
from ._verify import VerifyReport
from .config import EmbeddingConfig, config_text, write_config
from .errors import (
    EmbeddingError,
    IndexBusyError,
    IndexerError,
    IndexNotFoundError,
    ManifestError,
    StoreError,
)
from .manifest import Manifest, chunks_snapshot, documents_snapshot, identify
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
from .vectors import Chunks, DocumentIds, VectorView, vectors_of

__all__ = ["EXPORT_FORMATS", "CompactReport", "Index", "VerifyReport", "read_ids", "vector_array",
           "vector_schema"]


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
        """Whether `path` holds an index: its index.toml, or, where that was lost or left empty (a power
        cut), an indexer manifest, from which `open` recovers the configuration."""
        path = Path(path)
        with contextlib.suppress(OSError):
            if (path / CONFIG).stat().st_size > 0:
                return True
        return identify(path / MANIFEST)[0] == "ours"

    @classmethod
    def bound_config(cls, path: str | Path, settings: Settings | None = None) -> EmbeddingConfig | None:
        """The configuration the index at `path` is bound to (from index.toml, or the manifest's copy
        where that is lost), read without writing anything; None where there is no index."""
        path = Path(path)
        if not cls.exists(path):
            return None
        manifest = Manifest(path / MANIFEST, settings or Settings(), read_only=True)
        try:
            return load_config(path, manifest)
        finally:
            manifest.close()

    @classmethod
    def create(cls, path: str | Path, config: EmbeddingConfig, settings: Settings | None = None) -> Index:
        """Make a new index bound to `config`: the manifest (with a copy of the configuration, in the
        transaction that makes its schema), then the store, then index.toml.

        Only where nothing is, or where a creation stopped before anything was stored in it: a
        directory holding a file of that name that is not ours is refused untouched."""
        path, settings = Path(path), settings or Settings()
        if cls.exists(path):
            raise FileExistsError(f"{path} is already an index")
        path.mkdir(parents=True, exist_ok=True)
        # Two first syncs at once: one creates, the other waits here, then finds the index made.
        with creation_lock(path):
            if cls.exists(path):
                raise FileExistsError(f"{path} is already an index")
            kind, why = identify(path / MANIFEST)
            if kind == "foreign":
                raise not_an_index(path, why)
            if (path / STORE).exists():
                if kind == "absent":
                    raise store_without_manifest(path)
                remove_unfinished_store(path / STORE)
            manifest = Manifest(path / MANIFEST, settings, create=True, config_text=config_text(config))
            store = VectorStore.create(path / STORE, config.dim, config.dtype, settings.chunk_rows)
            write_config(path / CONFIG, config)
        return cls(path, config, manifest, store, settings)

    @classmethod
    def open(cls, path: str | Path, settings: Settings | None = None, *,
             read_only: bool | None = None) -> Index:
        """Open the index at `path`. `read_only` (default: where the directory or the manifest cannot be
        written, as on read-only media) opens it without any write: no migration, no recovery."""
        path, settings = Path(path), settings or Settings()
        kind, why = identify(path / MANIFEST)
        if kind == "foreign":
            raise not_an_index(path, why)
        if kind != "ours":
            if cls.exists(path):  # index.toml without its manifest
                raise ManifestError(f"{path / MANIFEST} is missing ({why}) but {CONFIG} is there: restore "
                                    "the manifest from a backup. Nothing was changed")
            if (path / STORE).exists():
                raise store_without_manifest(path)
            what = "does not exist" if not path.exists() else "holds no index"
            raise IndexNotFoundError(f"no index at {path}: the directory {what}. "
                                     f"Create one with `indexer sync SOURCE --index {path}`")
        if read_only is None:
            read_only = not (os.access(path, os.W_OK) and os.access(path / MANIFEST, os.W_OK))
        manifest = Manifest(path / MANIFEST, settings, read_only=read_only)
        try:
            config = load_config(path, manifest)
            store = load_store(path, config, manifest, settings)
        except BaseException:
            manifest.close()
            raise
        if (store.dim, store.dtype.name) != (config.dim, config.dtype):
            manifest.close()
            raise StoreError(f"{path / STORE} holds {store.dtype.name} vectors of dim {store.dim} but "
                             f"{CONFIG} says {config.dtype} of dim {config.dim}; the index is damaged")
        return cls(path, config, manifest, store, settings)

    def close(self) -> None:
        self.manifest.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def require_writable(self, action: str) -> None:
        """Refuse `action` (a sync, a repair, a compact) on an index opened read-only."""
        if self.manifest.read_only:
            raise IndexerError(f"{action} writes to the index, and {self.path} is open read-only (the "
                               "directory or its manifest cannot be written here). Nothing was changed; "
                               "run it where the index is writable. Reading it works as it is")

    def maintenance(self, exclusive: bool = False) -> AbstractContextManager[None]:
        """The index's maintenance lock (indexer/_lock.py): shared by syncs and verifies, which wait up
        to the busy timeout for a compact to finish; exclusive for compact, which never waits."""
        if exclusive:
            return maintenance_lock(self.path / STORE, exclusive=True, wait_s=0, busy=(
                f"another process is using the index {self.path} (a sync, a verify or another "
                "compact); nothing was changed. Run compact again when it has finished"))
        wait_s = self.settings.busy_timeout_ms / 1000
        return maintenance_lock(self.path / STORE, exclusive=False, wait_s=wait_s, busy=(
            f"a compact has held the index {self.path} for over {wait_s:.0f} s; nothing was changed. "
            "Run the same command again when it has finished"))

    def network_filesystem(self) -> str | None:
        return network_filesystem(self.path)

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

    def vectors(self) -> tuple[DocumentIds, VectorView]:
        """(ids, vecs) of every live document with a vector, one row a document. A long document,
        embedded as chunks, is the L2-normalized mean of its chunk vectors (computed as its row is
        read). Nothing is read until used."""
        snapshot = documents_snapshot(self.manifest.reader, self.path)
        return DocumentIds(snapshot), VectorView(snapshot, self.store)

    def chunks(self) -> Chunks:
        """Every chunk of every live document with a vector: `.ids`, `.ordinals`, `.starts`, `.ends`
        (character span in the document's text) and `.vectors` (lazily read), row by row. A document
        that fits the model's window is one chunk. Nothing is read until used."""
        return Chunks(chunks_snapshot(self.manifest.reader, self.path), self.store)

    def get(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors of `ids`, in that order, as rows of `vectors()`. KeyError names the ids that have none."""
        return vectors_of(self.manifest.conn, list(ids), self.store)

    def export(self, out: str | Path, ids_out: str | Path | None = None, format: str | None = None,
               level: str = "documents") -> int:
        """Write the vectors to a .npy file, or to a Parquet file with an id and a vector column.
        `format` ("npy" or "parquet") defaults to `out`'s extension, which must then be one of them.
        One row a document (`level="documents"`; a long one: the normalized mean of its chunks) or a
        chunk (`level="chunks"`, .npy only). Returns the number of rows.

        With .npy, `ids_out` gets the rows' ids in order as JSON lines, ASCII only: one JSON string a
        line (`read_ids` reads them back), or for chunks one JSON object a line, {"id", "chunk",
        "start", "end"}. An id may hold any character, a line break, U+2028 or NUL included, so plain
        lines could split one id in two and misalign every row after it; in JSON every such character
        is escaped."""
        return _export.export(self, Path(out), ids_out, format, level)

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

    # -- maintenance ----------------------------------------------------------------------------

    def retry(self) -> int:
        """Send failed contents back to pending; the next sync embeds them again."""
        self.require_writable("retry")
        return self.manifest.retry_failed()

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check that manifest and store agree; with `repair`, re-queue what is missing or bad. Holds
        the maintenance lock shared: a compact moving vectors meanwhile would look like lost chunks."""
        if repair:
            self.require_writable("verify --repair")
        with self.maintenance():
            return _verify.verify(self, repair)

    def compact(self) -> CompactReport:
        """Reclaim dead slots and orphan chunks, crash-safely: new chunks are written and made durable,
        then one transaction moves the slots, then the old chunk files are removed. A crash in between
        leaves only orphans, which the next compact removes.

        It holds the maintenance lock exclusively for its whole run, or does nothing: a sync committing
        a chunk, or another compact packing one, between this one's look at the manifest and its
        deletions would lose those vectors."""
        self.require_writable("compact")
        with self.maintenance(exclusive=True):
            active_claims = self.manifest.expire_claims()
            if active_claims:  # a sync that holds no lock: an older indexer, or another host
                raise IndexBusyError(f"another process is using the index {self.path} ({active_claims} "
                                     "active claim(s)); nothing was changed. Run compact again when "
                                     "it has finished")
            report = _compact.compact(self)
            before = self.manifest.path.stat().st_size
            self.manifest.vacuum()
            report.manifest_bytes_freed = max(0, before - self.manifest.path.stat().st_size)
            return report

