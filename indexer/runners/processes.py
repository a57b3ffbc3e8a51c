"""The process-pool runner: N worker processes on this machine, each with its own copy of the model.

    make(model, batch_size, embedder_options, workers=None, threads_per_worker=None, prefetch=1,
         claims_per_worker=1, max_restarts=None)

This module is the pool, in the driver's process; what runs inside a worker is in _worker_main.py and
the messages between them in _messages.py. Workers are started with the multiprocessing *spawn*
context. Each loads the model once with `load_embedder(model, batch_size=..., **embedder_options)` and
pins its math libraries to T threads (_cpus.py), so that N x T does not oversubscribe the cores. Only
texts go to a worker and only float32 vectors and per-document failures come back; the manifest and the
store stay with the driver.

Defaults, with C the CPUs this process may use (its affinity mask):
    threads per worker   T = 1 below 8 CPUs, 2 below 16, else 4. One process's intra-op threads
                         scale poorly (1 -> 2 threads gave 0.8 of linear, bench/RESULTS.md), so small
                         machines get one thread per process; on big ones a few threads per process
                         keep the number of model copies (memory, ~0.9 GB each measured) down
    workers              N = max(1, C // T), so N x T = C
With only --workers, T = max(1, C // N); with only --threads-per-worker, N = max(1, C // T). On 2 CPUs
the default is therefore 2 workers x 1 thread.

Scheduling: each worker holds up to `claims_per_worker` (default 1) claims; `capacity` = workers x
claims_per_worker + `prefetch` (default 1): one more waits in the runner and goes to the first worker
free. With one claim a worker, a worker that dies loses one claim (DESIGN.md: after a crash at most one
claim per worker is redone), and waits for each next claim's round trip through the driver: with the
fake model and claims of a few tens of milliseconds, 5-7% of its time even with work queued ahead
(stats(): `starved_share`; tests/test_worker_time.py, bench/bench_pool.py). Two claims a worker (the
next already in its pipe, a thread receiving it meanwhile) remove that wait, at the price of that
bound; the gpus runner takes two, to tokenize the next claim while the first is embedded.

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
claims fail with `WorkerHung`, so they go back to pending. Workers ignore SIGINT, SIGTERM and SIGHUP
(the driver's to handle) and die with the driver (PR_SET_PDEATHSIG on Linux): on a stop signal the
driver releases its claims and `close()` stops the workers (idle ones are told to exit, busy ones are
terminated) and joins them.

The per-GPU runner (runners/gpus.py) is this machinery with one worker per device.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import queue
import signal
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from multiprocessing.process import BaseProcess
from typing import Any

from ..embedders import ModelInfo
from ..errors import EmbeddingError, IndexerError, ModelLoadError
from . import BatchDone, EmbedResult, WorkerHung, WorkerLost
from ._cpus import usable_cpus
from ._liveness import HangRule, Heartbeats
from ._messages import (
    BatchFinished,
    Claim,
    Embedded,
    Limits,
    LoadFailed,
    Ready,
    Stop,
    WorkerMessage,
    WorkerSpec,
)
from ._worker_main import run as worker_main

__all__ = ["ProcessRunner", "WorkerSpec", "default_layout", "make"]


def default_layout(cpus: int, workers: int | None, threads: int | None) -> tuple[int, int]:
    """(workers, threads per worker); see the module docstring for the rule."""
    if workers is not None and threads is not None:
        return workers, threads
    if workers is not None:
        return workers, max(1, cpus // workers)
    if threads is None:
        threads = 1 if cpus < 8 else 2 if cpus < 16 else 4
    return max(1, cpus // threads), threads


# -- in the driver ----------------------------------------------------------------------------------------

@dataclass(eq=False)
class _Task:
    id: int
    texts: list[str]
    future: Future[EmbedResult]
    on_batch: BatchDone | None = None
    sent_at: float = 0.0  # when it was sent to a worker (time.monotonic())


@dataclass
class _WorkTime:
    """How one worker spent its time once it had work: busy (a claim in hand: from when the worker took
    it up to when its result reached the driver) or idle (none in hand). Idle while work was pending is
    also counted apart as `starved`: between one claim's result and the worker's next claim, and after
    its last claim as long as the driver still submitted work (to other workers). Times are
    time.monotonic(), which is system-wide, so the worker's and the driver's readings compare. The clock
    starts at the worker's first claim (its model load is not counted) and, after a restart, when the
    new process has loaded the model; it stops at a death."""

    busy: float = 0.0
    starved: float = 0.0
    until: float | None = None  # accounted up to here; None while not counting (before work, dead)
    started: bool = False  # it has had a claim in this run

    def claim_done(self, took: float, now: float) -> None:
        """A claim the worker took up at `took` came back (a result, an error, or lost with a death)."""
        start = took if self.until is None else max(took, self.until)  # a next claim taken up early
        if self.until is not None:
            self.starved += start - self.until
        self.busy += max(0.0, now - start)
        self.until, self.started = now, True

    def so_far(self, in_hand_since: float | None, now: float, last_submit: float
               ) -> tuple[float, float, float]:
        """(busy, idle, starved) up to `now`; a claim in hand since `in_hand_since` counts as busy, and
        idle after the last claim counts as starved up to `last_submit`, the driver's last submission."""
        if in_hand_since is not None:
            probe = replace(self)
            probe.claim_done(in_hand_since, now)
            return probe.busy, probe.starved, probe.starved
        if self.until is None:
            return self.busy, self.starved, self.starved
        tail = now - self.until
        return self.busy, self.starved + tail, self.starved + min(tail, max(0.0, last_submit - self.until))


@dataclass(eq=False)
class _Worker:
    """One worker process as the driver sees it."""

    index: int
    spec: WorkerSpec
    label: str
    process: BaseProcess | None = None
    tasks: Connection | None = None  # driver -> worker, written by its sender thread only
    outbox: queue.SimpleQueue[Any] | None = None  # what the sender thread sends next
    results: Connection | None = None  # worker -> driver
    state: str = "starting"  # starting | ready | dead
    held: list[_Task] = field(default_factory=list)  # sent to it, in order, not yet answered
    pid: int = 0
    deaths: int = 0
    last_beat: float | None = None  # when it last finished a batch (or started work); None when idle
    hung: bool = False  # killed by the hang watch: its death fails its claims with WorkerHung
    peak_rss_mb: float = 0.0  # the largest peak any of its processes reported
    clock: _WorkTime = field(default_factory=_WorkTime)  # busy and idle, across its processes

    def name(self) -> str:
        return f"{self.label} (pid {self.pid or (self.process.pid if self.process else 0)})"


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class ProcessRunner:
    """A Runner whose workers are local processes; see the module docstring."""

    def __init__(self, specs: list[WorkerSpec], labels: list[str], *, kind: str = "processes",
                 prefetch: int = 1, claims_per_worker: int = 1, max_restarts: int | None = None,
                 startup_timeout: float = 600.0) -> None:
        self.kind = kind  # the backend's name, for messages
        if not specs:
            raise IndexerError("a process runner needs at least one worker")
        self._ctx = multiprocessing.get_context("spawn")
        self.workers = [_Worker(i, spec, label) for i, (spec, label) in enumerate(zip(specs, labels,
                                                                                        strict=True))]
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
        self._queue: list[_Task] = []
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
                self._start(worker)
            self._monitor.start()
            self.info = self._await_first(startup_timeout)
        except BaseException:  # a failed start, a model that does not load, Ctrl-C: stop what started
            self.close()
            raise

    # -- the Runner protocol

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        task = _Task(next(self._ids), texts, Future(), on_batch)
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
                if worker.held and worker.state == "ready":  # busy up to the close
                    worker.clock.claim_done(worker.held[0].sent_at, self._closed_at)
                worker.held = []
        for task in orphans:
            _fail(task.future, WorkerLost(f"the {self.kind} runner was closed"))
        with contextlib.suppress(OSError):
            self._wake_w.send_bytes(b"x")
        if self._monitor.is_alive():
            self._monitor.join(timeout=10)  # it sees _closed and returns; the workers' ends are ours now
        self._stop_all()
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
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._broken is None and any(w.state == "starting" for w in self.workers):
                if time.monotonic() > deadline:
                    raise IndexerError(f"the {self.kind} workers did not all start within {timeout:.0f}s")
                self._ready.wait(0.2)
        if self._broken is not None:
            raise self._broken

    def busy_pids(self) -> list[int]:
        """The pids of the workers embedding a claim right now."""
        with self._lock:
            return [w.pid for w in self.workers if w.held]

    # -- starting and stopping workers

    def _start(self, worker: _Worker) -> None:
        task_r, task_w = self._ctx.Pipe(duplex=False)
        result_r, result_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=worker_main, args=(task_r, result_w, worker.spec),
                                    name=f"indexer-{worker.label}", daemon=True)
        process.start()
        task_r.close()  # the worker holds these ends; ours would hide its death (no EOF)
        result_w.close()
        worker.process, worker.tasks, worker.results = process, task_w, result_r
        worker.state, worker.pid, worker.held = "starting", process.pid or 0, []
        # A claim is bigger than a pipe's buffer: a send to a worker that does not read (hung, stopped)
        # blocks. Its own thread sends, so that nothing holding the runner's lock ever waits on it.
        worker.outbox = queue.SimpleQueue()
        threading.Thread(target=_send_tasks, args=(task_w, worker.outbox), daemon=True,
                         name=f"indexer-send-{worker.index}").start()

    @staticmethod
    def _close_pipes(worker: _Worker) -> None:
        if worker.outbox is not None:
            worker.outbox.put(_STOP_SENDING)
        for conn in (worker.tasks, worker.results):
            if conn is not None:
                conn.close()

    def _stop_all(self, grace: float = 5.0) -> None:
        """Idle workers are told to exit, the others terminated; all are joined (killed after `grace`)."""
        live = [w for w in self.workers if w.process is not None and w.state != "dead"]
        for worker in live:
            assert worker.process is not None
            if worker.state == "ready" and not worker.held and worker.outbox is not None:
                worker.outbox.put(Stop())  # its pipe is empty: the sender sends this at once
            else:
                worker.process.terminate()
        deadline = time.monotonic() + grace
        for worker in live:
            assert worker.process is not None
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
        for worker in live:
            worker.state = "dead"
            self._close_pipes(worker)
            with contextlib.suppress(ValueError):
                worker.process.close()  # type: ignore[union-attr]

    def _await_first(self, timeout: float) -> ModelInfo:
        deadline = time.monotonic() + timeout
        with self._ready:
            while self._info is None and self._broken is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise IndexerError(
                        f"no {self.kind} worker loaded model {self.workers[0].spec.model!r} within "
                        f"{timeout:.0f}s; check memory and the model, or use fewer workers")
                self._ready.wait(min(left, 0.5))  # short waits, so that Ctrl-C gets through
        if self._broken is not None:
            raise self._broken
        assert self._info is not None
        return self._info

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

    def _receive(self, worker: _Worker) -> None:
        conn, process = worker.results, worker.process
        try:
            while conn is not None and not conn.closed and conn.poll():
                self._handle(worker, conn.recv())
        except (EOFError, OSError):
            if process is not None:
                self._died(worker, process)

    def _kill_hung(self, live: list[_Worker]) -> None:
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
                    self._warnings.append(
                        f"{self.kind}: {w.name()} finished no batch for {now - w.last_beat:.0f}s (the hang "
                        f"deadline is {deadline:.0f}s); killed it and gave its claims back to pending")
                    with contextlib.suppress(OSError):
                        w.process.kill()

    def _beat(self, worker: _Worker) -> None:
        """The worker finished a batch or a claim (under the lock)."""
        now = time.monotonic()
        if worker.last_beat is not None:
            self.heartbeats.gap(now - worker.last_beat)
        worker.last_beat = now if worker.held else None

    def _handle(self, worker: _Worker, message: WorkerMessage) -> None:
        if isinstance(message, BatchFinished):
            with self._lock:
                task = next((t for t in worker.held if t.id == message.task), None)
                self._beat(worker)
            if task is not None and task.on_batch is not None:
                task.on_batch(message.texts)
            return
        settle: tuple[_Task, EmbedResult | BaseException] | None = None
        with self._lock:
            if self._closed:
                return
            if isinstance(message, Ready):
                worker.pid = message.pid
                worker.peak_rss_mb = max(worker.peak_rss_mb, message.peak_rss_mb)
                self._remember_limits(worker, message.limits)
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
            else:
                task = next((t for t in worker.held if t.id == message.task), None)
                if task is not None:
                    worker.held.remove(task)
                    self._beat(worker)
                    worker.clock.claim_done(message.started, time.monotonic())
                    if isinstance(message, Embedded):
                        worker.peak_rss_mb = max(worker.peak_rss_mb, message.peak_rss_mb)
                        self._remember_limits(worker, message.limits)
                        settle = (task, (message.vectors, message.failures))
                    else:
                        settle = (task, EmbeddingError(
                            f"{worker.name()} failed to embed a claim of {len(task.texts)} texts: "
                            f"{message.reason}"))
            self._dispatch()
        if settle is not None:
            task, outcome = settle
            if isinstance(outcome, BaseException):
                _fail(task.future, outcome)
            elif not task.future.done():
                task.future.set_result(outcome)

    def _remember_limits(self, worker: _Worker, limits: Limits) -> None:
        batch_size, batch_tokens = limits.batch_size, limits.batch_tokens
        if batch_size < worker.spec.batch_size:
            self._warnings.append(
                f"{self.kind}: {worker.label} ran out of memory; its batch size went from "
                f"{worker.spec.batch_size} to {batch_size} for the rest of the run")
        # the spec is what a restart loads with, so a restarted worker keeps the limits it found
        if (batch_size, batch_tokens) != (worker.spec.batch_size, worker.spec.batch_tokens):
            worker.spec = replace(worker.spec, batch_size=batch_size, batch_tokens=batch_tokens)

    def stats(self) -> dict[str, object]:
        """For the sync summary's backend_stats (its "warnings" join the summary's warnings).

        busy/idle/starved_seconds_per_worker: each worker's time from its first claim to the runner's
        close (or to now, before it: the driver reads these just before closing), with a claim in hand
        or without; starved is the idle while work was pending: between a claim's result and the
        worker's next claim, or after it until the driver's last submission (see _WorkTime).
        idle_share and starved_share: of all workers' time together (None before any claim)."""
        with self._lock:
            out: dict[str, object] = {
                "backend": self.kind, "workers": len(self.workers),
                "threads_per_worker": [w.spec.threads for w in self.workers],
                "batch_sizes": self.batch_sizes, "worker_deaths": self.lost, "workers_hung": self.hung,
                "restarts": self.restarts, "peak_rss_mb_per_worker": [w.peak_rss_mb for w in self.workers],
                **self._work_time(), "warnings": list(self._warnings)}
            if any(w.spec.device is not None for w in self.workers):
                out["devices"] = [w.spec.device for w in self.workers]
        return out

    def _work_time(self) -> dict[str, object]:
        """The busy and idle part of stats() (under the lock)."""
        now = self._closed_at if self._closed_at is not None else time.monotonic()
        # Rounded to the millisecond first, so that the shares are those of the figures reported.
        times = [tuple(round(t, 3) for t in w.clock.so_far(
            w.held[0].sent_at if w.held and w.state == "ready" else None, now, self._last_submit))
            for w in self.workers]
        total = sum(busy + idle for busy, idle, _ in times)
        return {"busy_seconds_per_worker": [busy for busy, _, _ in times],
                "idle_seconds_per_worker": [idle for _, idle, _ in times],
                "starved_seconds_per_worker": [starved for _, _, starved in times],
                "idle_share": round(sum(idle for _, idle, _ in times) / total, 4) if total else None,
                "starved_share": round(sum(s for _, _, s in times) / total, 4) if total else None}

    @property
    def batch_sizes(self) -> list[int]:
        """The batch size each worker settled on (the gpus runner halves it on out-of-memory)."""
        return [w.spec.batch_size for w in self.workers]

    def _died(self, worker: _Worker, process: BaseProcess) -> None:
        """`process`, the worker's, has died (or closed its pipe): fail its claim, maybe restart it."""
        lost: list[_Task] = []
        with self._lock:
            if worker.process is not process or worker.state == "dead" or self._closed:
                return  # noticed already (the pipe's EOF and the sentinel both tell)
            process.join(1.0)
            hung, worker.hung = worker.hung, False
            reason = "hung (no batch finished within the hang deadline) and was killed" if hung \
                else _exit_reason(process.exitcode)
            name = worker.name()
            lost, worker.held = worker.held, []
            if lost:  # its time on them counts as busy; its restart's model load as nothing
                worker.clock.claim_done(lost[0].sent_at, time.monotonic())
            worker.clock.until = None
            was_loading = worker.state == "starting"
            worker.state = "dead"
            worker.deaths += 1
            worker.last_beat = None
            self.lost += 1
            self.hung += hung
            death = (id(self), worker.index, worker.deaths)
            self._close_pipes(worker)
            if self._broken is not None:  # the run has failed already: no restart
                for task in lost:
                    _fail(task.future, self._broken)
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
            self._start(worker)
        what = "while loading the model" if was_loading else "while embedding a claim"
        lost_as = WorkerHung if hung else WorkerLost
        for task in lost:
            _fail(task.future, lost_as(f"{name} {reason} {what}; restarted it", death))

    def _break(self, error: IndexerError, *extra: _Task) -> None:
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
            _fail(task.future, error)

    def _dispatch(self) -> None:
        """Send waiting claims to idle workers (under the lock)."""
        while self._queue:
            ready = [w for w in self.workers if w.state == "ready" and len(w.held) < self.claims_per_worker]
            if not ready:
                return
            worker = min(ready, key=lambda w: len(w.held))  # an idle worker first
            task = self._queue.pop(0)
            if not worker.held:  # the hang clock starts when work starts
                worker.last_beat = time.monotonic()
            task.sent_at = time.monotonic()
            worker.held.append(task)
            assert worker.outbox is not None
            worker.outbox.put(Claim(task.id, task.texts))  # if it died just now, its sentinel fails the task


_STOP_SENDING = object()


def _send_tasks(conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """A worker's sender thread: claims to its pipe, in order, until told to stop or the pipe breaks
    (the worker died)."""
    while (item := outbox.get()) is not _STOP_SENDING:
        try:
            conn.send(item)
        except Exception:  # the pipe broke (the worker died) or was closed under us (it was stopped)
            return


def _fail(future: Future[EmbedResult], error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)


# -- construction ----------------------------------------------------------------------------------------

def check_options(backend: str, options: dict[str, object], takes: str) -> None:
    if options:
        flags = ", ".join("--" + name.replace("_", "-") for name in sorted(options))
        raise IndexerError(f"backend {backend} does not take {flags}; it takes {takes}")


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
