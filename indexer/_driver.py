"""The embed phase's driver: claim -> embed -> write whole chunks -> commit (fenced), groups of claims
in flight, their chunks written beside the commits (docs/ARCHITECTURE.md, "The driver pipeline")."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

import numpy as np

from ._faults import crash_point
from ._progress import ProgressMeter, SyncSummary
from .errors import (
    BackendUnavailableError,
    LeaseLostError,
)
from .manifest import Claim, Finished, Manifest
from .runners import BackendFailure, Runner, WorkerHung, WorkerLost
from .runners._liveness import HangRule
from .store import VectorStore

# -- the shared claim -> embed -> write -> commit step ------------------------------------------------

# A real embedding is never (nearly) all zeros: a model or an API that answers zeros has failed (an API
# answering zeros for an outage, a model that overflowed to zero in float16). Norms of real vectors are
# about 1 (normalized) or at least orders of magnitude above this.
MIN_VECTOR_NORM = 1e-6


def unusable_vectors(rows: np.ndarray) -> dict[int, str]:
    """The rows (as stored: after the cast to the store's dtype) that must not be marked done, with
    their reason: a non-finite value, or a norm of (nearly) zero."""
    # One pass over the block: a row's sum of squares is finite and clear of zero unless the row is
    # bad, or its values so large or small that the square overflows or underflows. Those few rows are
    # looked at one by one.
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        squares = np.einsum("ij,ij->i", rows, rows, dtype=np.float32)
    bad: dict[int, str] = {}
    for i in np.flatnonzero(~(squares > MIN_VECTOR_NORM ** 2) | ~(squares < np.inf)):
        row = rows[i].astype(np.float64)
        norm = float(np.linalg.norm(row))
        if not np.isfinite(row).all():
            bad[int(i)] = "the model produced a non-finite vector; not stored"
        elif not norm > MIN_VECTOR_NORM:
            bad[int(i)] = f"the model produced a zero vector (norm {norm:.3g}); not stored"
    return bad


def write_chunk(store: VectorStore, claim: Claim, vectors: np.ndarray, failures: dict[int, str]) -> Finished:
    """Write the claim's chunk whole and durably (when any of its rows is usable): what a commit of
    the claim then records. A vector that cannot be stored joins `failures` with its reason."""
    block = np.full((store.chunk_rows, store.dim), np.nan, dtype=store.dtype)
    with np.errstate(over="ignore"):  # a value too large for float16 becomes inf: failed just below
        block[:len(vectors)] = vectors
    for i, reason in unusable_vectors(block[:len(vectors)]).items():
        failures.setdefault(i, reason)
    block[list(failures)] = np.nan
    done = [(h, claim.chunk * store.chunk_rows + i) for i, h in enumerate(claim.hashes)
            if i not in failures]
    checksum = None
    if done:
        checksum = store.write_chunk(claim.chunk, block)
        crash_point("after-chunk-write")
    return Finished(claim, done, [(claim.hashes[i], r) for i, r in failures.items()
                                  if not isinstance(r, BackendFailure)], checksum)


class OutageWatch:
    """Stops a sync whose backend keeps failing claims for reasons not the documents' own: their
    contents go back to pending without an attempt and are claimed again, so without this a backend
    that is down would be asked for ever. (The openai runner stops sooner, by its own count of
    requests; this is the rule for every backend.)"""

    LIMIT = 3  # claims in a row that came back with nothing embedded and something returned

    def __init__(self) -> None:
        self.in_a_row = 0

    def after_claim(self, done: int, reasons: Iterable[str]) -> None:
        """A claim (or a group of them) committed `done` rows and failed the others for `reasons`."""
        returned = [r for r in reasons if isinstance(r, BackendFailure)]
        if done or not returned:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        if self.in_a_row >= self.LIMIT:
            last = returned[-1]
            raise BackendUnavailableError(
                f"the embedding backend keeps failing: {last}; {self.in_a_row} claims in a row came back "
                "with nothing embedded. Nothing is lost and no document used up an attempt: run the same "
                "sync again once the backend answers")


class Group:
    """Claims taken in one transaction and handed to the runner as one submission (their texts end to
    end), then written chunk by chunk and committed in one transaction. `lost`: ids of its claims
    taken over while in flight (their results are dropped)."""

    def __init__(self, claims: list[Claim]) -> None:
        self.claims = claims
        self.id = claims[0].id  # the meter's key while in flight
        self.texts = [t for c in claims for t in c.texts]
        self.submitted = time.perf_counter()
        self.lost: set[int] = set()

    def parts(self, vectors: np.ndarray, failures: dict[int, str]
              ) -> Iterator[tuple[Claim, np.ndarray, dict[int, str]]]:
        """Each live claim with its own rows of the group's result (failures by position in it)."""
        start = 0
        for claim in self.claims:
            end = start + len(claim.texts)
            if claim.id not in self.lost:
                yield claim, vectors[start:end], {i - start: r for i, r in failures.items()
                                                  if start <= i < end}
            start = end


class GroupSizer:
    """How many chunks the next group claims: as many as the worker embeds in `seconds`, judged by
    the groups before (submission to result, as the driver sees it, per text); one to start with, at
    most doubling from one group to the next, at most `most`."""

    def __init__(self, seconds: float, most: int, chunk_rows: int) -> None:
        self.seconds, self.most, self.chunk_rows = seconds, max(1, most), chunk_rows
        self.chunks = 1

    def observe(self, texts: int, seconds: float) -> None:
        if texts == 0 or self.seconds <= 0:
            return
        per_chunk = max(seconds / texts * self.chunk_rows, 1e-9)
        self.chunks = max(1, min(self.most, 2 * self.chunks, int(self.seconds / per_chunk)))


# A group's vectors in flight are bounded to this many bytes (float32), whatever the dimension.
GROUP_BYTES_MAX = 32 * 2**20
# Chunk files of a group written at once.
CHUNK_WRITERS = 4


class Writing:
    """A group whose chunks are being written, each whole and durably, side by side (the disk takes
    several flushes at once for little more than one), while the driver commits the group before and
    claims and embeds the next; committed before the next."""

    def __init__(self, writers: ThreadPoolExecutor, store: VectorStore, group: Group,
                 parts: Iterable[tuple[Claim, np.ndarray, dict[int, str]]]) -> None:
        self.group = group
        self.chunks = [(writers.submit(write_chunk, store, *part), part[2]) for part in parts]

    def written(self) -> list[tuple[Finished, dict[int, str]]]:
        """Each chunk's claim as written, with its failures, once all are."""
        return [(future.result(), failures) for future, failures in self.chunks]


def drive(manifest: Manifest, store: VectorStore, runner: Runner, summary: SyncSummary,
          meter: ProgressMeter) -> None:
    """Keep `runner.capacity` groups of claims in flight; write and commit each as its vectors arrive.

    A group holds as many one-chunk claims as the worker embeds in about `Settings.claim_seconds`
    (`GroupSizer`): they are claimed in one transaction, embedded as one submission, their chunks
    written (each durably) and then committed in one transaction, each claim fenced alone.
    Where groups may hold two claims or more, a group's chunks are written while the group before is
    committed and the next is claimed and embedded (`Writing`), and a group holds at most half of
    `Settings.claim_chunks_max`: with the inline runner the claims in flight stay within it. A runner
    of capacity c holds up to c groups, and one more is written: a kill redoes at most those.
    A worker that dies or hangs fails its groups with WorkerLost (WorkerHung): they go back to pending
    at once, and the summary counts the worker once however many groups it held."""
    # Grow the shape ahead of the claims (unwritten chunks cost nothing and read as NaN): rewriting
    # zarr.json for every claim cost more than the claim's own bookkeeping.
    grow = lambda chunk: store.ensure_chunks(chunk + 1, spare=16 + chunk // 8)  # noqa: E731
    in_flight: dict[Future[tuple[np.ndarray, dict[int, str]]], Group] = {}
    settings = manifest.settings
    most = min(settings.claim_chunks_max, GROUP_BYTES_MAX // (store.chunk_rows * store.dim * 4))
    pipelined = settings.claim_seconds > 0 and most >= 2  # a group written while the next is embedded
    sizer = GroupSizer(settings.claim_seconds, most // 2 if pipelined else most, store.chunk_rows)
    writing: Writing | None = None
    runner.watch_for_hangs(HangRule(settings.hang_seconds, settings.hang_factor))
    renew_every = settings.lease_seconds / 3
    last_renew = time.monotonic()
    exhausted = False
    deaths: set[object] = set()
    outage = OutageWatch()

    @contextlib.contextmanager
    def step(name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            summary.step_seconds[name] = summary.step_seconds.get(name, 0.0) + time.perf_counter() - start

    def release(group: Group) -> None:
        for claim in group.claims:
            manifest.release(claim)  # a no-op for a claim committed or taken over

    def commit_written() -> None:
        """Commit the group being written, once its chunks are."""
        nonlocal writing, exhausted
        if writing is None:
            return
        group = writing.group
        try:
            with step("write"):
                written = writing.written()
            with step("commit"):
                results = manifest.commit_many([w for w, _ in written])
        except BaseException:  # Ctrl-C mid-write: the group goes back too
            release(group)  # (a no-op for claims whose commit went through)
            raise
        finally:
            writing = None
        reasons: list[str] = []  # the failures of the group's committed claims
        done = committed = 0
        for (w, claim_failures), gave_up in zip(written, results, strict=True):
            if isinstance(gave_up, LeaseLostError):
                summary.fencing_refusals += 1
                continue
            committed += 1
            summary.claims += 1
            summary.embedded += len(w.done)
            summary.failed += gave_up
            done += len(w.done)
            reasons += claim_failures.values()
            meter.add(len(w.done), sum(len(t) for t in w.claim.texts))
        returned = sum(isinstance(r, BackendFailure) for r in reasons)
        summary.returned += returned
        if returned:  # pending again: claim them again in this run, unless the backend is down
            exhausted = False
        if committed:
            outage.after_claim(done, reasons)

    # Threads that write a group's chunk files. After a Ctrl-C they finish the file in hand: a chunk of
    # a released claim, never committed, that `compact` removes.
    writers = ThreadPoolExecutor(max_workers=min(CHUNK_WRITERS, sizer.most),
                                 thread_name_prefix="indexer-write")
    try:
        while True:
            while not exhausted and len(in_flight) < runner.capacity:
                with step("claim"):
                    claims = manifest.claim_many(store.chunk_rows, sizer.chunks, on_chunk=grow)
                if not claims and writing is not None:
                    # Nothing free while a group is written: commit it and ask once more, as without
                    # the overlap (a vector its write found unusable is a failed attempt, pending again).
                    commit_written()
                    continue
                if not claims:
                    exhausted = True
                    break
                try:
                    group = Group(claims)
                    with step("embed"):
                        future = runner.submit(group.texts, meter.on_batch(group))
                    in_flight[future] = group
                except BaseException:  # Ctrl-C (or a runner error) before the group was in flight
                    for claim in claims:
                        manifest.release(claim)
                    raise
            if not in_flight:
                if writing is None:
                    break
                commit_written()  # (a backend's failures may bring work back: then claim again)
                continue
            # Short waits: the progress of batches within groups is reported between them.
            with step("embed"):
                finished, _ = wait(in_flight, timeout=min(renew_every, meter.interval),
                                   return_when=FIRST_COMPLETED)
            meter.tick()
            if time.monotonic() - last_renew > renew_every:
                for future, group in list(in_flight.items()):
                    for claim in group.claims:
                        if claim.id in group.lost:
                            continue
                        try:
                            manifest.renew(claim)
                        except LeaseLostError:  # taken over while this worker was stalled: drop it alone
                            summary.fencing_refusals += 1
                            group.lost.add(claim.id)
                    if len(group.lost) == len(group.claims):
                        del in_flight[future]
                        meter.settle(group)
                last_renew = time.monotonic()
            for future in finished:
                if future not in in_flight:
                    continue
                group = in_flight.pop(future)
                # Popped, the group is neither in flight nor written: until it is handed to Writing,
                # whatever stops the driver (Ctrl-C included) gives it back here.
                try:
                    meter.settle(group)
                    try:
                        vectors, failures = future.result()
                    except WorkerLost as exc:
                        death = exc.death if exc.death is not None else object()
                        if death not in deaths:
                            deaths.add(death)
                            summary.workers_lost += 1
                            summary.workers_hung += isinstance(exc, WorkerHung)
                        ids = ", ".join(str(c.id) for c in group.claims)
                        summary.warnings.append(f"claim{'s' if len(group.claims) > 1 else ''} {ids}: {exc}; "
                                                "their documents go back to pending")
                        release(group)
                        exhausted = False
                        continue
                    except Exception:  # the runner gave up: this group goes back (below), but
                        # the group before came back whole: its chunks are being written, commit it
                        # rather than embed it again. Should that fail, it goes back as well (released
                        # by commit_written), and the runner's error is the one to report.
                        with contextlib.suppress(Exception):
                            commit_written()
                        raise
                    sizer.observe(len(group.texts), time.perf_counter() - group.submitted)
                    # Its chunks are written while the group before is committed (in claim order).
                    written_next = Writing(writers, store, group, group.parts(vectors, failures))
                    commit_written()
                    writing = written_next
                except BaseException:
                    release(group)
                    raise
                if not pipelined or failures:
                    # A group the runner failed texts of is committed before the next claim, as without
                    # the overlap: a backend that is down is asked no more often than `OutageWatch`
                    # allows, and the failed attempts are pending again for that claim.
                    commit_written()
    finally:
        writers.shutdown(wait=False, cancel_futures=True)
        for group in [*in_flight.values(), *([writing.group] if writing is not None else [])]:
            release(group)
        summary.peak_rss_mb = max(summary.peak_rss_mb, meter.peak_rss_mb)
