"""The one exception hierarchy of indexer.

Every message names the object (index, file and line, document), its state and what to do::

    IndexerError                   base class; the CLI prints str(exc) and exits with exc.exit_code
    ├── IndexNotFoundError         no index at DIR
    ├── ConfigMismatchError        a sync asked for another embedding configuration than the index's
    ├── SourceError                a source cannot be read at all (missing file, unknown format)
    │   └── IncompleteSourceError  --delete-missing with a source cut short or empty: nothing
    │                              deleted; what was read is synced (the error holds the summary)
    ├── ModelLoadError             the embedding model cannot be loaded (offline, bad path)
    ├── MissingDependencyError     an optional package a chosen feature needs is not installed
    ├── IndexBusyError             maintenance (compact) could not get the index to itself, or a sync
    │                              or verify waited too long for a compact to finish; nothing changed
    ├── ManifestError              manifest.sqlite is unreadable, too new, or on an unsafe filesystem
    │   └── LeaseLostError         a commit whose claim token no longer matches (fencing refusal)
    ├── StoreError                 vectors.zarr is missing, unwritable or has torn chunks
    │   └── ChunkMissingError      a chunk that holds served vectors is missing or torn
    └── EmbeddingError             an embedder failed for a whole batch; per-document failures
        │                          are recorded in the manifest, not raised
        └── BackendUnavailableError  the embedding backend is down (outage, timeouts, rate limits,
                                   unusable answers): nothing lost, no attempt used up; exit 4

    KeyboardInterrupt
    └── StopSignal                 SIGTERM or SIGHUP during a sync: handled like Ctrl-C (claims released,
                                   run recorded `interrupted`); exit status 128 + the signal's number
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ChunkMissingError",
    "ConfigMismatchError",
    "EmbeddingError",
    "IncompleteSourceError",
    "IndexBusyError",
    "IndexNotFoundError",
    "IndexerError",
    "LeaseLostError",
    "ManifestError",
    "MissingDependencyError",
    "ModelLoadError",
    "SourceError",
    "StopSignal",
    "StoreError",
]


class IndexerError(Exception):
    """Base of every error indexer raises on purpose."""

    exit_code = 1


class IndexNotFoundError(IndexerError):
    exit_code = 2


class IndexBusyError(IndexerError):
    """Another process holds the index's maintenance lock; the operation changed nothing."""


class ConfigMismatchError(IndexerError):
    exit_code = 3


class SourceError(IndexerError):
    exit_code = 2


class IncompleteSourceError(SourceError):
    """A sync asked to delete missing documents read a source that is not whole: its last record is
    cut, or it held no record. Nothing was deleted; the documents read were synced. `summary` is the
    sync's SyncSummary."""

    def __init__(self, message: str, summary: object) -> None:
        super().__init__(message)
        self.summary = summary


class ModelLoadError(IndexerError):
    exit_code = 2


class MissingDependencyError(IndexerError):
    """Names the missing package and the pip command that installs it."""

    exit_code = 2


class ManifestError(IndexerError):
    pass


class LeaseLostError(ManifestError):
    """Raised by a commit whose claim was taken over after its lease expired."""


class StoreError(IndexerError):
    pass


class ChunkMissingError(StoreError):
    """A chunk file that should hold vectors is missing or has the wrong size."""

    def __init__(self, message: str, chunk: int) -> None:
        super().__init__(message)
        self.chunk = chunk


class EmbeddingError(IndexerError):
    pass


class BackendUnavailableError(EmbeddingError):
    """The backend kept failing for reasons that are not the documents' (5xx, timeouts, dropped
    connections, rate limits, unusable answers). Claims are released and no document used up an
    attempt: the same sync resumes once the backend answers. Its own exit code, so that a cron job
    can tell an outage from bad input."""

    exit_code = 4


class StopSignal(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGHUP) arrived during a sync; everything that handles Ctrl-C handles it."""

    def __init__(self, signum: int) -> None:
        import signal

        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(f"stopped by {self.name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
