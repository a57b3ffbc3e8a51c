"""The process-pool runner: N worker processes on this machine, each with its own copy of the model.

    make(model, batch_size, embedder_options, workers=None, threads_per_worker=None, prefetch=1,
         claims_per_worker=1, max_restarts=None)

This module is the pool, in the driver's process. Each worker (_worker_main.py, spawned) pins its
math libraries to T threads, so that N x T does not oversubscribe the cores, and loads the model once;
only texts go to it and only vectors and per-document failures come back (_messages.py); the manifest
and the store stay with the driver. The driver's view of one worker is _worker_handle.py.

The default workers x threads share out the CPUs this process may use (_cpus.py: `default_layout`).

Scheduling: each worker holds up to `claims_per_worker` (default 1) claims; `capacity` = workers x
claims_per_worker + `prefetch` (default 1): one more waits in the runner and goes to the first worker
free. With one claim a worker, a worker that dies loses one claim (DESIGN.md: after a crash at most one
claim per worker is redone), and waits for each next claim's round trip through the driver, a share
of its time that grows as claims get shorter (stats(): `starved_share`; `python -m bench pool` measures
it). Two claims a worker (the next already in its pipe, a thread receiving it meanwhile) remove that
wait, at the price of that bound; the gpus runner takes two, to tokenize the next claim while the
first is embedded.

A worker that dies (SIGKILL, segfault, OOM kill) is noticed through its process sentinel: the claim it
held fails with `WorkerLost`, so the driver releases it to pending and it is embedded again, and the
worker is restarted. The restarts of one run are bounded (`max_restarts`, default 3 x workers, shared
by all workers); one more death fails the run with an IndexerError (a document that crashes the model
every time must not loop forever).

A worker reports each finished forward batch (a `BatchFinished` message): the driver's progress and ETA
move within a claim, and it is the worker's sign of life. A worker that holds a claim and finishes no batch
for longer than the hang deadline (runners/_liveness.py: max(hang_seconds, hang_factor x the median gap
between batches), set by the driver from Settings with `watch_for_hangs`) is taken to hang (a stuck CUDA
call, a deadlocked tokenizer, SIGSTOP): it is killed with SIGKILL and restarted like a dead one, and its
claims fail with `WorkerHung`, so they go back to pending. Stop signals are the driver's (workers
ignore them, and die with the driver): it releases its claims and `close()` stops the workers (idle
ones are told to exit, busy ones are terminated) and joins them.

The per-GPU runner (runners/gpus.py) is this machinery with one worker per device.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from ..embedders import ModelInfo
from ..errors import EmbeddingError, IndexerError, ModelLoadError
from . import BatchDone, EmbedResult, WorkerHung, WorkerLost
from ._cpus import default_layout, usable_cpus
from ._flags import check_options
from ._liveness import HangRule, Heartbeats, hang_warning
from ._messages import BatchFinished, Embedded, LoadFailed, Ready, WorkerMessage, WorkerSpec
from ._worker_handle import Task, WorkerHandle, exit_reason, stop_all, work_time_stats

__all__ = ["ProcessRunner", "WorkerSpec", "default_layout", "make"]


# -- in the driver ----------------------------------------------------------------------------------------

class ProcessRunner:
    """A Runner whose workers are local processes; see the module docstring."""

    def __init__(self, specs: list[WorkerSpec], labels: list[str], *, kind: str = "processes",
                 prefetch: int = 1, claims_per_worker: int = 1, max_restarts: int | None = None,
                 startup_timeout: float = 600.0) -> None:
        self.kind = kind  # the backend's name, for messages
        if not specs:
            raise IndexerError("a process runner needs at least one worker")
        self._ctx = multiprocessing.get_context("spawn")
        self.workers = [WorkerHandle(i, spec, label)
                        for i, (spec, label) in enumerate(zip(specs, labels, strict=True))]
        self.claims_per_worker = max(1, claims_per_worker)
        self.capacity = len(specs) * self.claims_per_worker + max(0, prefetch)
        self.max_restarts = 3 * len(specs) if max_restarts is None else max_restarts
        self.restarts = 0
        self.lost = 0  # worker deaths noticed
        self.hung = 0  # of which the hang watch caused
        self.heartbeats = Heartbeats()
        self.info: ModelInfo
        self._info: ModelInfo | None = None
        self._ready = threading.Condition()
        self._lock = threading.RLock()
        self._queue: list[Task] = []
        self._ids = itertools.count()
        self._broken: IndexerError | None = None
        self._closed = False
        self._closed_at: float | None = None  # the end of the workers' busy and idle accounting
        self._last_submit = 0.0  # until then, the driver still had work for idle workers
        self._warnings: list[str] = []
        self._wake_r, self._wake_w = self._ctx.Pipe(duplex=False)
        self._monitor = threading.Thread(target=self._watch, name=f"indexer-{self.kind}", daemon=True)
        try:
            for worker in self.workers:
                worker.start(self._ctx)
            self._monitor.start()
            self._wait(lambda: self._info is not None, startup_timeout,
                       f"no {self.kind} worker loaded model {specs[0].model!r} within "
                       f"{startup_timeout:.0f}s; check memory and the model, or use fewer workers")
            assert self._info is not None
            self.info = self._info
        except BaseException:  # a failed start, a model that does not load, Ctrl-C: stop what started
            self.close()
            raise

    # -- the Runner protocol

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        task = Task(next(self._ids), texts, Future(), on_batch)
        with self._lock:
            if self._broken is not None or self._closed:
                task.future.set_exception(self._broken or IndexerError(f"the {self.kind} runner is closed"))
                return task.future
            self._queue.append(task)
            self._last_submit = time.monotonic()
            self._dispatch()
        return task.future

    def close(self) -> None:
        """Stop the workers and join them: idle ones exit when told, busy or loading ones are
        terminated (their claims are the driver's to release). Pending futures fail."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closed_at = time.monotonic()
            orphans = self._queue + [t for w in self.workers for t in w.held]
            self._queue = []
            for worker in self.workers:
                if (since := worker.in_hand_since()) is not None:  # busy up to the close
                    worker.clock.claim_done(since, self._closed_at)
                worker.held = []
        for task in orphans:
            task.fail(WorkerLost(f"the {self.kind} runner was closed"))
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"x")
        if self._monitor.is_alive():
            self._monitor.join(timeout=10)  # it sees _closed and returns; the workers' ends are ours now
        stop_all(self.workers)
        for conn in (self._wake_r, self._wake_w):
            conn.close()

    def watch_for_hangs(self, rule: HangRule) -> None:
        """Take a worker for hung by `rule` (the driver sets it from its Settings)."""
        self.heartbeats = Heartbeats(rule)

    # -- for diagnostics and tests

    @property
    def pids(self) -> list[int]:
        """The live workers' process ids, in worker order (0 for one not started)."""
        with self._lock:
            return [w.pid if w.state != "dead" else 0 for w in self.workers]

    def wait_ready(self, timeout: float = 600.0) -> None:
        """Block until every worker has loaded the model (the runner works before that: this is for
        benchmarks that time the steady state)."""
        self._wait(lambda: all(w.state != "starting" for w in self.workers), timeout,
                   f"the {self.kind} workers did not all start within {timeout:.0f}s")

    def busy_pids(self) -> list[int]:
        """The pids of the workers embedding a claim right now."""
        with self._lock:
            return [w.pid for w in self.workers if w.held]

    def _wait(self, done: Callable[[], bool], timeout: float, too_late: str) -> None:
        """Block until `done()`; raise the run's failure if it failed meanwhile, or IndexerError(too_late)
        after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._broken is None and not done():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IndexerError(too_late)
                self._ready.wait(min(left, 0.5))  # short waits, so that Ctrl-C gets through
        if self._broken is not None:
            raise self._broken

    # -- the monitor thread: results, deaths, restarts

    def _watch(self) -> None:
        try:
            self._watch_loop()
        except BaseException as exc:  # never leave the driver waiting on futures nobody will resolve
            with self._lock:
                if not self._closed:
                    self._break(IndexerError(f"the {self.kind} runner stopped watching its workers: "
                                             f"{type(exc).__name__}: {exc}"))

    def _watch_loop(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                live = [w for w in self.workers if w.state != "dead" and w.process is not None]
                waitables: list[Any] = [self._wake_r]
                for w in live:
                    waitables += [w.results, w.process.sentinel]  # type: ignore[union-attr]
            try:
                ready = wait_for(waitables, timeout=self.heartbeats.poll_interval())
            except (OSError, ValueError):  # a connection closed under us by close()
                if self._closed:
                    return
                continue
            self._kill_hung(live)
            for w in live:
                process = w.process
                assert process is not None
                if w.results in ready:
                    self._receive(w)
                if process.sentinel in ready:
                    self._receive(w)  # a last message may still be in the pipe
                    self._died(w, process)

    def _receive(self, worker: WorkerHandle) -> None:
        conn, process = worker.results, worker.process
        try:
            while conn is not None and not conn.closed and conn.poll():
                self._handle(worker, conn.recv())
        except (EOFError, OSError):
            if process is not None:
                self._died(worker, process)

    def _kill_hung(self, live: list[WorkerHandle]) -> None:
        """SIGKILL every busy worker past the hang deadline; its death (the sentinel) does the rest."""
        deadline = self.heartbeats.deadline()
        if deadline is None:
            return
        now = time.monotonic()
        with self._lock:
            for w in live:
                if (w.held and w.last_beat is not None and now - w.last_beat > deadline and not w.hung
                        and w.process is not None and w.state == "ready"):
                    w.hung = True
                    silent_s = now - w.last_beat
                    self._warnings.append(f"{self.kind}: {hang_warning(w.name(), silent_s, deadline)}")
                    with contextlib.suppress(OSError):
                        w.process.kill()

    def _handle(self, worker: WorkerHandle, message: WorkerMessage) -> None:
        if isinstance(message, BatchFinished):
            with self._lock:
                task = next((t for t in worker.held if t.id == message.task), None)
                worker.last_beat = self.heartbeats.beat(worker.last_beat, bool(worker.held))
            if task is not None and task.on_batch is not None:
                task.on_batch(message.texts)
            return
        settle: tuple[Task, EmbedResult | BaseException] | None = None
        with self._lock:
            if self._closed:
                return
            if isinstance(message, Ready):
                worker.pid = message.pid
                self._reported(worker, message)
                info = message.info
                if self._info is not None and info != self._info:
                    self._break(IndexerError(
                        f"{worker.name()} loaded model {info.model!r} as {info}, but the first worker "
                        f"has {self._info}; every worker must load the same model"))
                    return
                worker.state = "ready"
                if worker.clock.started:  # a restart: loaded and idle from now
                    worker.clock.until = time.monotonic()
                with self._ready:
                    if self._info is None:
                        self._info = info
                    self._ready.notify_all()
            elif isinstance(message, LoadFailed):
                self._break(ModelLoadError(
                    f"model {worker.spec.model!r} could not be loaded in {worker.name()}: {message.reason}"))
                return
            elif (task := worker.answered(message.task, message.started)) is not None:
                worker.last_beat = self.heartbeats.beat(worker.last_beat, bool(worker.held))
                if isinstance(message, Embedded):
                    self._reported(worker, message)
                    settle = (task, (message.vectors, message.failures))
                else:
                    settle = (task, EmbeddingError(
                        f"{worker.name()} failed to embed a claim of {len(task.texts)} texts: "
                        f"{message.reason}"))
            self._dispatch()
        if settle is not None:
            task, outcome = settle
            task.settle(outcome)

    def _reported(self, worker: WorkerHandle, message: Ready | Embedded) -> None:
        if (shrank := worker.reported(message.limits, message.peak_rss_mb)) is not None:
            self._warnings.append(f"{self.kind}: {shrank}")

    def stats(self) -> dict[str, object]:
        """For the sync summary's backend_stats (its "warnings" join the summary's warnings); the
        workers' busy, idle and starved time up to the close (or to now, before it: the driver reads
        these just before closing) as work_time_stats says."""
        with self._lock:
            now = self._closed_at if self._closed_at is not None else time.monotonic()
            out: dict[str, object] = {
                "backend": self.kind, "workers": len(self.workers),
                "threads_per_worker": [w.spec.threads for w in self.workers],
                "batch_sizes": self.batch_sizes, "worker_deaths": self.lost, "workers_hung": self.hung,
                "restarts": self.restarts,
                "peak_rss_mb_per_worker": [w.peak_rss_so_far() for w in self.workers],
                **work_time_stats(self.workers, now, self._last_submit),
                "warnings": list(self._warnings)}
            if any(w.spec.device is not None for w in self.workers):
                out["devices"] = [w.spec.device for w in self.workers]
        return out

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size each worker settled on (the gpus runner halves it on out-of-memory)."""
        return [w.spec.batch_size for w in self.workers]

    def _died(self, worker: WorkerHandle, process: BaseProcess) -> None:
        """`process`, the worker's, has died (or closed its pipe): fail its claim, maybe restart it."""
        lost: list[Task] = []
        with self._lock:
            if worker.process is not process or worker.state == "dead" or self._closed:
                return  # noticed already (the pipe's EOF and the sentinel both tell)
            process.join(1.0)
            hung, worker.hung = worker.hung, False
            reason = "hung (no batch finished within the hang deadline) and was killed" if hung \
                else exit_reason(process.exitcode)
            name = worker.name()
            was_loading = worker.state == "starting"
            lost = worker.mark_dead()
            self.lost += 1
            self.hung += hung
            death = (id(self), worker.index, worker.deaths)
            if self._broken is not None:  # the run has failed already: no restart
                for task in lost:
                    task.fail(self._broken)
                return
            if self.restarts >= self.max_restarts:
                self._break(IndexerError(
                    f"{name} {reason}; the {self.kind} workers died {self.lost} times in this run, more "
                    f"than the {self.max_restarts} restarts allowed. The claims in flight went back to "
                    "pending. A document that crashes the model, or too little memory for this many "
                    "workers (check dmesg for the OOM killer), are the usual causes; run the same sync "
                    "again with fewer --workers, or with --backend inline to find the document."),
                    *lost)
                return
            self.restarts += 1
            worker.start(self._ctx)
        what = "while loading the model" if was_loading else "while embedding a claim"
        lost_as = WorkerHung if hung else WorkerLost
        for task in lost:
            task.fail(lost_as(f"{name} {reason} {what}; restarted it", death))

    def _break(self, error: IndexerError, *extra: Task) -> None:
        """Fail the run: every claim waiting or in work fails with `error`, and so does every later one."""
        self._broken = error
        tasks = [*extra, *self._queue]
        self._queue = []
        for worker in self.workers:
            tasks += worker.held
            worker.held = []
        with self._ready:
            self._ready.notify_all()
        for task in tasks:
            task.fail(error)

    def _dispatch(self) -> None:
        """Send waiting claims to idle workers (under the lock)."""
        while self._queue:
            ready = [w for w in self.workers if w.state == "ready" and len(w.held) < self.claims_per_worker]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(w.held))  # an idle worker first
            worker.take(self._queue.pop(0))


# -- construction ----------------------------------------------------------------------------------------


def make(model: str, batch_size: int, embedder_options: dict[str, object], workers: int | None = None,
         threads_per_worker: int | None = None, prefetch: int = 1, claims_per_worker: int = 1,
         max_restarts: int | None = None, **options: object) -> ProcessRunner:
    """Start the workers and return once the first has loaded the model (the rest load meanwhile)."""
    check_options("processes", options, "--workers and --threads-per-worker")
    if workers is not None and workers < 1:
        raise IndexerError("--workers must be at least 1")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise IndexerError("--threads-per-worker must be at least 1")
    n, threads = default_layout(usable_cpus(), workers, threads_per_worker)
    spec = WorkerSpec(model=model, batch_size=batch_size, embedder_options=dict(embedder_options),
                      threads=threads)
    return ProcessRunner([spec] * n, [f"worker {i}" for i in range(n)], prefetch=prefetch,
                         claims_per_worker=claims_per_worker, max_restarts=max_restarts)
