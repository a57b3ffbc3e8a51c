"""Defaults of indexer, in one place. Every other module takes a Settings, never a bare constant."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["DEFAULT_MODEL", "Settings"]

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class Settings:
    dtype: str = "float32"
    batch_size: int = 32
    # Padded tokens (texts x longest) per forward pass on the CPU, texts sorted by token length: a batch
    # of short texts grows up to batch_size, one of long texts shrinks. 0: batches of batch_size alone.
    # 4,096 beat no budget on real paragraphs on the CPU (bench/RESULTS.md, the backends section).
    batch_tokens: int = 4096
    retry_attempts: int = 3
    scan_batch: int = 10_000
    # Rows per Zarr chunk: a claim owns one whole chunk, written once by one writer.
    chunk_rows: int = 1024
    # The driver takes claims in groups sized by time: as many chunks at once (one transaction to claim
    # them, one to commit them) as the worker embeds in about this many seconds, judged by the groups
    # before; at most claim_chunks_max chunks (and 32 MiB of vectors) a group. A slow worker (a real
    # model on a CPU) gets one chunk at a time, as before; a fast one many, so that the driver's cost
    # per transaction is paid once for all of them. 0: always one chunk.
    claim_seconds: float = 1.0
    claim_chunks_max: int = 8
    # A claim not committed within this many seconds goes back to pending for someone else.
    lease_seconds: float = 900.0
    # SQLite waits this long for a lock held by another process before it gives up.
    busy_timeout_ms: int = 60_000
    # A worker (processes, gpus, ray) that holds a claim and finishes no batch for max(hang_seconds,
    # hang_factor x the median gap between batches so far) is taken to hang: killed and replaced, its
    # claim back to pending. Progress is batches, so a slow worker on a long claim is never killed.
    # hang_seconds = 0 turns the watch off.
    hang_seconds: float = 60.0
    hang_factor: float = 10.0
    # The manifest's write-ahead log is checkpointed once it holds this much (MiB) and cut back to it
    # afterwards; a sync ends with it emptied. Larger: fewer checkpoints while claims commit.
    wal_limit_mib: int = 64

    @classmethod
    def from_env(cls) -> Settings:
        """The defaults, with INDEXER_CHUNK_ROWS, INDEXER_LEASE_SECONDS, INDEXER_SCAN_BATCH,
        INDEXER_HANG_SECONDS, INDEXER_WAL_LIMIT_MIB and INDEXER_CLAIM_SECONDS from the environment
        where set. For tests and tuning (small chunks, short leases); the CLI reads them."""
        env = {name: os.environ.get(f"INDEXER_{name.upper()}") for name in _ENV_FIELDS}
        given: dict[str, Any] = {name: _ENV_FIELDS[name](v) for name, v in env.items() if v is not None}
        return replace(cls(), **given)


_ENV_FIELDS: dict[str, type[int] | type[float]] = {
    "chunk_rows": int, "lease_seconds": float, "scan_batch": int, "hang_seconds": float,
    "wal_limit_mib": int, "claim_seconds": float}
