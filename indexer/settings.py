"""Defaults of indexer, in one place. Every other module takes a Settings, never a bare constant."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_MODEL", "Settings"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Settings:
    dtype: str = "float32"
    batch_size: int = 32
    retry_attempts: int = 3
    scan_batch: int = 10_000
    # Rows per Zarr chunk, and so per claim: a claim owns whole chunks, written once by one writer.
    chunk_rows: int = 1024
    # A claim not committed within this many seconds goes back to pending for someone else.
    lease_seconds: float = 900.0
    # SQLite waits this long for a lock held by another process before it gives up.
    busy_timeout_ms: int = 60_000
