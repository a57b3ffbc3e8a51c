"""What a sync tells as it runs (`Progress`, through `ProgressMeter`) and at its end (`SyncSummary`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import psutil

from .manifest import Claim

if TYPE_CHECKING:
    from ._driver import Group


@dataclass(frozen=True)
class Progress:
    """What a sync reports to `on_progress`: after each scan batch; in the embed phase after each
    committed claim and, within claims, as workers finish batches (about twice a second at most).

    In the embed phase `processed` counts texts embedded (committed, or in a finished batch of a claim
    in flight) and `eta_s` comes from characters done vs left: claims go shortest texts first, so a
    rate in documents would promise too early an end."""

    phase: str  # "load" (the model starts; once, before its first use), "scan" or "embed"
    processed: int
    total: int | None
    docs_per_s: float  # `unit`s a second
    eta_s: float | None
    rss_mb: float
    detail: str = ""  # "load": what is loading (model, runtime, backend and its workers)
    unit: str = "documents"  # what `processed` counts: documents scanned, or chunks embedded


@dataclass
class SyncSummary:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    embedded: int = 0  # chunks embedded (a document that fits the model's window is one chunk)
    chunks: int = 0  # chunks of the new and changed documents
    truncated: int = 0  # new and changed documents cut at the model's window (an unchunked index)
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    scan_seconds: float = 0.0
    embed_seconds: float = 0.0
    dry_run: bool = False
    would_embed: int = 0
    # What would_embed counts: chunks (a document that fits the window is one), or documents for a dry
    # run before the index exists, which loads no model and so cannot split long documents yet.
    would_embed_unit: str = "chunks"
    model: str = ""  # the name this sync knew the model by (another name of the index's weights is fine)
    # The backend that ran the model and its layout (workers, threads, devices), as chosen by
    # --backend auto where asked; empty when no model was loaded.
    backend: str = ""
    backend_settings: dict[str, object] = field(default_factory=dict)
    # Live documents the sources no longer hold (counted when deleting, and by a dry run); a dry run
    # lists the first MISSING_IDS_LISTED of their ids.
    missing: int = 0
    missing_ids: list[str] = field(default_factory=list)
    claims: int = 0
    fencing_refusals: int = 0
    workers_lost: int = 0  # worker deaths (however many claims each took), hangs included
    returned: int = 0  # documents the backend failed (outage, timeout, ...): pending again, no attempt used
    workers_hung: int = 0  # workers killed because they finished no batch within the hang deadline
    peak_rss_mb: float = 0.0  # this (the driver's) process
    # Worker processes (processes, gpus, ray backends): the sum of each worker's peak, an upper bound of
    # their peak together; per worker in backend_stats["peak_rss_mb_per_worker"].
    workers_peak_rss_mb: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # Sources that cannot tell which documents are missing (cut mid-record, or no record read), each
    # as "file:line: why": with any, --delete-missing deletes nothing.
    incomplete_sources: list[str] = field(default_factory=list)
    # What the runner says about its work when it has a `stats()` method (the openai backend: requests,
    # retries, tokens sent, achieved tokens/minute, truncations); its "warnings" join `warnings`.
    backend_stats: dict[str, object] = field(default_factory=dict)
    # The embed phase's wall seconds by what the driver was doing: "claim" (claim_many, the texts read
    # included), "embed" (handing groups to the runner, which embeds inline ones there, and waiting for
    # results), "write" (waiting for chunk files), "commit" (commit_many). The rest: bookkeeping.
    step_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class ProgressMeter:
    """A phase's progress: what is committed plus, in the embed phase, the finished batches of groups of
    claims (`Group`) in flight (reported by the runner's threads through `on_batch`, so under a lock).
    Reports go to the callback from the driver's thread only, at most every `interval` seconds between
    commits. `unit` is what it counts: documents scanned, or chunks (plain documents and long
    documents' chunks) embedded."""

    def __init__(self, phase: str, total: int | None, callback: Callable[[Progress], None] | None,
                 total_chars: int | None = None, interval: float = 0.5, unit: str = "documents") -> None:
        self.phase, self.total, self.callback, self.unit = phase, total, callback, unit
        self.total_chars, self.interval = total_chars, interval
        self.start = time.perf_counter()
        self.processed = 0
        self.chars = 0
        self.peak_rss_mb = 0.0
        self._partial: dict[int, tuple[int, int]] = {}  # claim id -> (texts, chars) of finished batches
        self._lock = threading.Lock()
        self._driver = threading.get_ident()
        self._last_report = self.start
        self._last_processed = -1

    def add(self, n: int, chars: int = 0) -> None:
        """`n` documents committed (`chars`: the characters of the texts their claim finished)."""
        self.processed += n
        self.chars += chars
        self._report()

    def on_batch(self, claim: Claim | Group) -> Callable[[int], None]:
        """The runner's callback for `claim`: a batch of n of its texts finished. The worker sorts a
        claim by length, so the n done are counted as its n shortest texts."""
        lengths = np.fromiter((len(t) for t in claim.texts), np.int64, len(claim.texts))
        done_chars = np.cumsum(np.sort(lengths))

        def batch_done(n: int) -> None:
            with self._lock:
                texts = min(self._partial.get(claim.id, (0, 0))[0] + n, len(done_chars))
                self._partial[claim.id] = (texts, int(done_chars[texts - 1]) if texts else 0)
            if threading.get_ident() == self._driver:  # the inline runner: no other chance to report
                self.tick()

        return batch_done

    def settle(self, claim: Claim | Group) -> None:
        """The claim is committed or lost: its batches no longer count as in flight."""
        with self._lock:
            self._partial.pop(claim.id, None)

    def tick(self) -> None:
        if time.perf_counter() - self._last_report >= self.interval:
            self._report()

    def _report(self) -> None:
        self._last_report = time.perf_counter()
        rss = psutil.Process().memory_info().rss / 2**20
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        if self.callback is None:
            return
        with self._lock:
            processed = self.processed + sum(t for t, _ in self._partial.values())
            chars = self.chars + sum(c for _, c in self._partial.values())
        if processed == self._last_processed:  # e.g. a claim's batches were all reported: its commit
            return
        self._last_processed = processed
        elapsed = max(self._last_report - self.start, 1e-9)
        rate = processed / elapsed
        if self.total_chars and chars > 0:
            eta: float | None = max(0, self.total_chars - chars) / (chars / elapsed)
        else:
            eta = (self.total - processed) / rate if self.total is not None and rate > 0 else None
        self.callback(Progress(self.phase, processed, self.total, rate, eta, rss, self.unit))
