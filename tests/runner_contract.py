"""The runner contract: what every backend (indexer/runners) promises, as one suite of tests that each
backend's tests subclass (zarr-python's `StoreTests` pattern). A new backend gets every guarantee by one
small class in its own test file:

    class TestMyRunner(RunnerContract):
        backend = "mine"           # its name for make_runner and sync(backend=...)
        capacity = 4               # the capacity of the runner `make()` gives
        ...                        # plus what it cannot be put through, as `Lacks("why")`

The guarantees, all through real workers (spawned processes, local Ray, a loopback HTTP server):
the same vectors as the inline runner bit for bit, each distinct content embedded once; a resync
embeds only what changed; progress within a claim is reported through `on_batch`; a worker killed or
SIGSTOPped mid-claim loses nothing and is replaced; a death the runner may not recover from fails the
sync fast with a clear error, and the next sync resumes; a model that cannot load is refused with a
clear error; close() may be called twice.

A backend that cannot be put through a test says so with a capability set to `Lacks(reason)`: the test
is skipped with that reason, never silently. Capabilities default to True, so a new backend is held to
everything until it says otherwise.

Also here: `Watched`, the Runner wrapper the kill tests strike through, and the manifest queries the
runner tests check an index with.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil
import pytest

from indexer import Index, IndexerError, Status, SyncOptions, sync
from indexer.embedders import load_embedder
from indexer.errors import ModelLoadError
from indexer.manifest import Inspection
from indexer.runners import BatchDone, EmbedResult, Runner, make_runner
from indexer.runners._liveness import HangRule
from indexer.settings import Settings

from helpers import assert_same_vectors, corpus

T = TypeVar("T")

# -- what a test reads of an index -----------------------------------------------------------------------

def query(index_dir: Path, question: Callable[[Inspection], T]) -> T:
    """The answer to `question` about the index's manifest."""
    with Inspection.open(index_dir) as look:
        return question(look)


def committed_claims(index_dir: Path) -> int:
    return query(index_dir, lambda look: sum(1 for c in look.claims().values() if c.state == "committed"))


def done_contents(index_dir: Path) -> int:
    return query(index_dir, lambda look: look.contents_by_state()["done"])


def last_run(index_dir: Path) -> tuple[str, dict[str, Any]]:
    run = query(index_dir, lambda look: look.runs()[-1])
    assert run.summary is not None, run
    return run.state, json.loads(run.summary)


def check_consistent(index_dir: Path) -> Status:
    """The index verifies; its status."""
    with Index.open(index_dir) as idx:
        report = idx.verify()
        assert report.ok, report.to_dict()
        return idx.status()


def nothing_claimed(index_dir: Path) -> bool:
    """No staged text is held by a claim and no claim is active: whatever was in flight went back."""
    return query(index_dir, lambda look: look.active_claims() == 0
                 and not any((s.claim_id or 0) > 0 for s in look.staged()))


def gone(pids: list[int]) -> bool:
    """True when none of `pids` is a live process (a zombie counts as gone: it no longer runs)."""
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def big_corpus(chunk: int) -> tuple[list[dict[str, str]], Settings]:
    """Three claims of `chunk` distinct texts each, and the settings that make them so."""
    docs = [{"id": f"b{i}", "text": f"big document {i}"} for i in range(3 * chunk)]
    return docs, Settings(chunk_rows=chunk)


def gone_within(pids: list[int], seconds: float) -> bool:
    """`gone(pids)` now, or within `seconds`."""
    deadline = time.monotonic() + seconds
    while not gone(pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


# -- a runner watched, and struck ------------------------------------------------------------------------

@dataclass(frozen=True)
class WorkerState:
    """One worker of a runner as a test sees it."""

    pid: int
    state: str  # "ready"; "starting" or "restarting" while it loads the model; "dead"
    deaths: int
    busy: bool  # it holds a claim


Strike = Callable[[int, WorkerState], None]  # what to do to worker i, seen stopped in the middle of a claim


def sigkill(index: int, worker: WorkerState) -> None:
    os.kill(worker.pid, signal.SIGKILL)


def leave_stopped(index: int, worker: WorkerState) -> None:
    """A hang: the worker stays SIGSTOPped."""


class Watched:
    """A Runner around another that counts the texts each successful claim delivered, and, given
    `strike`, strikes the first worker seen working on a claim (`workers()`: the runner's workers)."""

    def __init__(self, inner: Runner, workers: Callable[[], list[WorkerState]] | None = None,
                 strike: Strike | None = None) -> None:
        assert strike is None or workers is not None, "to strike a worker, say how to see them"
        self.inner, self.workers, self.strike = inner, workers, strike
        self.info = inner.info
        self.delivered: Counter[str] = Counter()
        self.victims: list[int] = []  # the index of the worker struck
        self.victim_pids: list[int] = []
        self.at_close: list[WorkerState] = []  # the workers just before the runner was closed
        self._striker: threading.Thread | None = None

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        future = self.inner.submit(texts, on_batch)
        future.add_done_callback(lambda f: f.exception() is None and self.delivered.update(texts))
        if self.strike is not None and self._striker is None:
            self._striker = threading.Thread(target=self._strike_when_busy, daemon=True)
            self._striker.start()
        return future

    def _strike_when_busy(self, timeout: float = 60.0) -> None:
        """Stop the first worker seen holding a claim; if it still holds it once the driver has read
        what the worker sent before it stopped, it is mid-claim: strike it (it stays stopped unless the
        strike ends it). Else let it go on and look again. No timing assumption about the model's speed."""
        assert self.workers is not None and self.strike is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, worker in enumerate(self.workers()):
                if not worker.busy or worker.state != "ready":
                    continue
                try:
                    os.kill(worker.pid, signal.SIGSTOP)
                except ProcessLookupError:
                    continue
                time.sleep(0.1)
                now = self.workers()[index]
                if now.pid == worker.pid and now.busy:
                    self.victims.append(index)
                    self.victim_pids.append(worker.pid)
                    self.strike(index, worker)
                    return
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGCONT)
            time.sleep(0.002)

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def watch_for_hangs(self, rule: HangRule) -> None:
        self.inner.watch_for_hangs(rule)

    def close(self) -> None:
        if self.workers is not None:
            if self.victims:  # a struck worker is being replaced: let it come back before the close
                deadline = time.monotonic() + 60
                while (self.workers()[self.victims[0]].state in ("starting", "restarting")
                       and time.monotonic() < deadline):
                    time.sleep(0.05)
            self.at_close = self.workers()
        self.inner.close()


# -- the contract ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Lacks:
    """A capability a backend does not have, and why: the tests that need it are skipped, saying so."""

    reason: str

    def __bool__(self) -> bool:
        return False


Capability = bool | Lacks


class RunnerContract:
    """Every backend's promises. Subclass it as `Test<Backend>Runner` and set what differs."""

    backend: ClassVar[str]
    model: ClassVar[str] = "fake:16"
    # The model whose inline runner gives this backend's vectors bit for bit.
    reference_model: ClassVar[str] = "fake:16"
    capacity: ClassVar[int]  # of the runner `make()` gives
    unloadable_model: ClassVar[str] = "fake:0"
    load_error: ClassVar[type[IndexerError]] = ModelLoadError
    load_error_match: ClassVar[str]  # the refusal's message, as a regular expression
    # Enough texts for a claim to report progress more than once (batches of one text).
    progress_texts: ClassVar[int] = 64

    # Its workers are processes on this machine, which a test can see (`worker_states`), stop and kill.
    can_kill_a_worker: ClassVar[Capability] = True
    # How long a worker's process may outlive close() (0: close() joins them).
    workers_exit_within: ClassVar[float] = 0.0
    # A worker that finishes no batch past the hang deadline (Settings.hang_seconds) is killed, replaced.
    watches_for_hangs: ClassVar[Capability] = True
    # backend_stats["peak_rss_mb_per_worker"]: each worker's own peak, read during the sync.
    reports_worker_memory: ClassVar[Capability] = True
    # on_batch reports every text of a claim, no fewer (never more: that much every backend promises).
    reports_every_text: ClassVar[Capability] = True
    # on_batch is called more than once within a claim of several batches.
    reports_within_a_claim: ClassVar[Capability] = True

    # For the kill tests: the big corpus, three claims of `big_chunk` texts, each long enough to be
    # seen held; what the driver's warning says of a killed worker; the hang deadline.
    big_chunk: ClassVar[int] = 4096
    death_warning: ClassVar[str]
    hang_seconds: ClassVar[float] = 1.5
    fatal_loss_error: ClassVar[str]  # the error of a death the runner may not recover from, as a regex

    # -- what a backend supplies

    def backend_options(self, workers: int) -> dict[str, object]:
        """Its options for `workers` workers (what `--workers N` and the like give)."""
        return {"workers": workers}

    def make(self, workers: int = 2, batch_size: int = 32, model: str | None = None,
             **options: object) -> Runner:
        """A runner of this backend, as make_runner builds it."""
        given: dict[str, Any] = {**self.backend_options(workers), **options}
        return make_runner(self.backend, model or self.model, batch_size=batch_size, **given)

    def worker_states(self, runner: Runner) -> list[WorkerState]:
        """Its workers, in order (for a backend that `can_kill_a_worker`)."""
        raise NotImplementedError(f"{type(self).__name__}: say how to see the workers, or set "
                                  "can_kill_a_worker = Lacks(why)")

    def runner_that_cannot_recover(self) -> Runner:
        """A runner for which one worker's death is fatal (no restart allowed: nothing left to finish)."""
        raise NotImplementedError(f"{type(self).__name__}: say how to make it, or set "
                                  "can_kill_a_worker = Lacks(why)")

    @contextlib.contextmanager
    def progress_visible(self, runner: Runner) -> Iterator[None]:
        """Slows the runner's worker where the backend needs a claim to take a while to report on it."""
        yield

    def assert_deaths_counted(self, summary: Any, deaths: int, hung: int) -> None:
        """The backend's own stats count the deaths (and, of them, hangs) the summary does."""
        stats = summary.backend_stats
        assert (stats["worker_deaths"], stats["workers_hung"]) == (deaths, hung), stats

    # -- helpers

    @staticmethod
    def require(capability: Capability) -> None:
        assert capability is True or isinstance(capability, Lacks), "a capability is True or Lacks(why)"
        if isinstance(capability, Lacks):
            pytest.skip(capability.reason)

    def big(self) -> tuple[list[dict[str, str]], Settings]:
        return big_corpus(self.big_chunk)

    @pytest.fixture(scope="class")
    def big_reference(self, tmp_path_factory: pytest.TempPathFactory) -> Path:
        """The inline runner's index of the big corpus: what every run of it must equal, bit for bit.
        (Asked for with request.getfixturevalue once a test knows it applies: it takes a while.)"""
        out = tmp_path_factory.mktemp("reference") / "idx"
        docs, settings = self.big()
        sync(out, docs, SyncOptions(model=self.reference_model, settings=settings))
        return out

    def assert_replaced(self, watched: Watched, before: list[WorkerState]) -> None:
        """The struck worker's process is gone and a new one, with the model loaded again, took its
        place; every other worker kept its process."""
        (victim,), (victim_pid,) = watched.victims, watched.victim_pids
        assert before[victim].pid == victim_pid and gone([victim_pid])
        for index, (was, now) in enumerate(zip(before, watched.at_close, strict=True)):
            if index == victim:
                assert (now.state, now.deaths) == ("ready", 1) and now.pid not in (0, victim_pid), now
            else:
                assert (now.pid, now.deaths) == (was.pid, 0), (was, now)

    # -- the guarantees

    def test_same_vectors_as_inline_each_content_embedded_once_close_twice(self, tmp_path: Path) -> None:
        docs = corpus(3000, distinct=1700)
        settings = Settings(chunk_rows=128)
        runner = self.make()
        assert runner.capacity == self.capacity and runner.info.model == self.model
        pids: list[int] = []
        if self.can_kill_a_worker:
            pids = [w.pid for w in self.worker_states(runner)]
            assert len(set(pids)) == 2 and os.getpid() not in pids and 0 not in pids
        watched = Watched(runner)
        summary = sync(tmp_path / "runner", docs, SyncOptions(settings=settings), runner=watched)
        inline = sync(tmp_path / "inline", docs, SyncOptions(model=self.reference_model, settings=settings))

        assert summary.embedded == inline.embedded == 1700
        assert summary.claims == math.ceil(1700 / 128) == committed_claims(tmp_path / "runner")
        assert summary.workers_lost == 0 and summary.fencing_refusals == 0 and summary.failed == 0
        # Every distinct text went out in exactly one successful claim.
        assert set(watched.delivered) == {d["text"] for d in docs}
        assert max(watched.delivered.values()) == 1
        assert_same_vectors(tmp_path / "runner", tmp_path / "inline")
        state, recorded = last_run(tmp_path / "runner")
        assert state == "finished" and recorded["claims"] == summary.claims and recorded["embedded"] == 1700
        assert recorded["workers_peak_rss_mb"] == summary.workers_peak_rss_mb
        st = check_consistent(tmp_path / "runner")
        assert st["documents"] == st["done"] == 3000 and st["pending"] == 0
        if self.reports_worker_memory:  # issue 15: the workers' memory, not only the driver's
            peaks = summary.backend_stats["peak_rss_mb_per_worker"]
            assert isinstance(peaks, list) and len(peaks) == 2 and all(p > 10 for p in peaks), peaks
            assert summary.workers_peak_rss_mb == pytest.approx(sum(peaks), abs=0.1)
        # The sync closed the runner it was given; a second close is harmless, the workers stay gone.
        runner.close()
        assert gone_within(pids, self.workers_exit_within)

    def test_resync_by_backend_name_embeds_only_changes(self, tmp_path: Path) -> None:
        docs = corpus(400, distinct=400)
        options = self.backend_options(2)
        settings = Settings(chunk_rows=64)
        first = sync(tmp_path / "idx", docs,
                     SyncOptions(model=self.model, backend=self.backend, backend_options=options,
                                 settings=settings))
        assert first.embedded == 400 and first.claims == 7
        docs[:10] = [{"id": d["id"], "text": d["text"] + " changed"} for d in docs[:10]]
        second = sync(tmp_path / "idx", docs,
                      SyncOptions(model=self.model, backend=self.backend, backend_options=options,
                                  settings=settings))
        assert (second.changed, second.unchanged, second.embedded, second.claims) == (10, 390, 10, 1)
        # Nothing to embed (the index's own model, not given again).
        third = sync(tmp_path / "idx", docs, SyncOptions(backend=self.backend, backend_options=options))
        assert third.embedded == 0 and third.unchanged == 400
        sync(tmp_path / "inline", docs, SyncOptions(model=self.reference_model))
        assert_same_vectors(tmp_path / "idx", tmp_path / "inline")

    def _progress_of_one_claim(self) -> list[int]:
        """on_batch's reports over one claim of `progress_texts` texts in batches of one; the claim's
        vectors are the reference model's, bit for bit."""
        runner = self.make(workers=1, batch_size=1)
        texts = [f"progress text {i}" for i in range(self.progress_texts)]
        calls: list[int] = []
        try:
            with self.progress_visible(runner):
                vectors, failures = runner.submit(texts, calls.append).result(timeout=120)
        finally:
            runner.close()
        assert failures == {}
        expected = load_embedder(self.reference_model).embed(texts)
        assert vectors.dtype == expected.dtype and vectors.tobytes() == expected.tobytes()
        assert all(n > 0 for n in calls) and sum(calls) <= len(texts), calls  # never too many
        return calls

    def test_progress_is_reported_within_a_claim(self) -> None:
        self.require(self.reports_within_a_claim)
        calls = self._progress_of_one_claim()
        assert len(calls) >= 2, calls

    def test_progress_reports_add_up_to_the_claim(self) -> None:
        self.require(self.reports_every_text)
        calls = self._progress_of_one_claim()
        assert sum(calls) == self.progress_texts, calls

    def test_a_worker_killed_mid_claim_loses_nothing(self, tmp_path: Path,
                                                     request: pytest.FixtureRequest) -> None:
        self.require(self.can_kill_a_worker)
        reference: Path = request.getfixturevalue("big_reference")
        docs, settings = self.big()
        runner = self.make()
        before = self.worker_states(runner)
        watched = Watched(runner, lambda: self.worker_states(runner), strike=sigkill)
        summary = sync(tmp_path / "idx", docs, SyncOptions(settings=settings), runner=watched)

        assert len(watched.victims) == 1, "no worker was seen working"
        assert summary.workers_lost == 1 and summary.fencing_refusals == 0 and summary.failed == 0
        assert any(self.death_warning in w and "go back to pending" in w for w in summary.warnings), \
            summary.warnings
        assert summary.embedded == len(docs) and summary.claims == 3 == committed_claims(tmp_path / "idx")
        # Only the lost claims were embedded again: every text went out in exactly one successful claim.
        assert set(watched.delivered) == {d["text"] for d in docs} and max(watched.delivered.values()) == 1
        assert_same_vectors(tmp_path / "idx", reference)
        self.assert_replaced(watched, before)
        self.assert_deaths_counted(summary, 1, 0)
        state, recorded = last_run(tmp_path / "idx")
        assert state == "finished" and recorded["workers_lost"] == 1
        st = check_consistent(tmp_path / "idx")
        assert st["done"] == len(docs) and st["pending"] == 0

    def test_a_sigstopped_worker_is_taken_for_hung_replaced_and_its_claim_redone(
            self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        """Issue 14: a worker SIGSTOPped mid-claim hung the sync forever. Past the hang deadline it is
        killed and replaced, and its claims go back to pending and are embedded once."""
        self.require(self.watches_for_hangs)
        self.require(self.can_kill_a_worker)
        reference: Path = request.getfixturevalue("big_reference")
        docs, _ = self.big()
        settings = Settings(chunk_rows=self.big_chunk, hang_seconds=self.hang_seconds)
        runner = self.make()
        before = self.worker_states(runner)
        watched = Watched(runner, lambda: self.worker_states(runner), strike=leave_stopped)
        summary = sync(tmp_path / "idx", docs, SyncOptions(settings=settings), runner=watched)

        assert len(watched.victims) == 1, "no worker was seen working"
        assert summary.workers_hung == 1 and summary.workers_lost == 1 and summary.failed == 0
        self.assert_deaths_counted(summary, 1, 1)
        pid = watched.victim_pids[0]
        assert any(f"pid {pid}" in w and "finished no batch" in w for w in summary.warnings), summary.warnings
        assert any("hung" in w and "go back to pending" in w for w in summary.warnings), summary.warnings
        assert summary.embedded == len(docs) and summary.claims == 3 == committed_claims(tmp_path / "idx")
        assert set(watched.delivered) == {d["text"] for d in docs} and max(watched.delivered.values()) == 1
        assert_same_vectors(tmp_path / "idx", reference)
        self.assert_replaced(watched, before)
        state, recorded = last_run(tmp_path / "idx")
        assert state == "finished" and recorded["workers_hung"] == 1
        st = check_consistent(tmp_path / "idx")
        assert st["done"] == len(docs) and st["pending"] == 0

    def test_a_death_it_cannot_recover_from_fails_fast_and_the_next_sync_resumes(
            self, tmp_path: Path, request: pytest.FixtureRequest) -> None:
        self.require(self.can_kill_a_worker)
        reference: Path = request.getfixturevalue("big_reference")
        docs, settings = self.big()
        runner = self.runner_that_cannot_recover()
        watched = Watched(runner, lambda: self.worker_states(runner), strike=sigkill)
        started = time.monotonic()
        with pytest.raises(IndexerError, match=self.fatal_loss_error):
            sync(tmp_path / "idx", docs, SyncOptions(settings=settings), runner=watched)
        assert time.monotonic() - started < 60 and len(watched.victims) == 1
        # Nothing stays claimed: the lost claim and the others in flight went back to pending.
        assert nothing_claimed(tmp_path / "idx")
        assert last_run(tmp_path / "idx")[0] == "failed"
        st = check_consistent(tmp_path / "idx")
        assert st["active_claims"] == 0 and st["contents"]["claimed"] == 0
        done = done_contents(tmp_path / "idx")
        assert st["done"] == done and st["pending"] == len(docs) - done

        # The same sync, inline this time, finishes the job; nothing is embedded twice.
        again = sync(tmp_path / "idx", docs, SyncOptions(settings=settings))
        assert again.embedded == len(docs) - done and again.workers_lost == 0
        assert_same_vectors(tmp_path / "idx", reference)
        check_consistent(tmp_path / "idx")

    def test_a_model_that_cannot_load_is_refused(self) -> None:
        with pytest.raises(self.load_error, match=self.load_error_match):
            self.make(model=self.unloadable_model)
