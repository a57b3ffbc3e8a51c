"""One worker process of the process pool (processes.py) as the driver sees it: starting it, its pipes
and sender thread, the claims it holds, its busy and idle time, and stopping it. What runs inside the
process is _worker_main.py."""

from __future__ import annotations

import contextlib
import queue
import signal
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any

from . import BatchDone, EmbedResult
from ._liveness import process_peak_rss_mb
from ._messages import Claim, Limits, Stop, WorkerSpec
from ._worker_main import run as worker_main

__all__ = ["Task", "WorkTime", "WorkerHandle", "exit_reason", "stop_all", "work_time_stats"]


@dataclass(eq=False)
class Task:
    """A claim's texts submitted to the pool, and the future its result settles."""

    id: int
    texts: list[str]
    future: Future[EmbedResult]
    on_batch: BatchDone | None = None
    sent_at: float = 0.0  # when it was sent to a worker (time.monotonic())

    def settle(self, outcome: EmbedResult | BaseException) -> None:
        """Resolve the future with `outcome`, unless it was settled already (failed as lost, say)."""
        if isinstance(outcome, BaseException):
            self.fail(outcome)
        elif not self.future.done():
            self.future.set_result(outcome)

    def fail(self, error: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(error)


@dataclass
class WorkTime:
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


_STOP_SENDING = object()


def _send_tasks(conn: Connection, outbox: queue.SimpleQueue[Any]) -> None:
    """A worker's sender thread: claims to its pipe, in order, until told to stop or the pipe breaks
    (the worker died)."""
    while (item := outbox.get()) is not _STOP_SENDING:
        try:
            conn.send(item)
        except Exception:  # the pipe broke (the worker died) or was closed under us (it was stopped)
            return


@dataclass(eq=False)
class WorkerHandle:
    """One worker process as the driver sees it; the pool changes it under its lock."""

    index: int
    spec: WorkerSpec
    label: str
    process: BaseProcess | None = None
    tasks: Connection | None = None  # driver -> worker, written by its sender thread only
    outbox: queue.SimpleQueue[Any] | None = None  # what the sender thread sends next
    results: Connection | None = None  # worker -> driver
    state: str = "starting"  # starting | ready | dead
    held: list[Task] = field(default_factory=list)  # sent to it, in order, not yet answered
    pid: int = 0
    deaths: int = 0
    last_beat: float | None = None  # when it last finished a batch (or started work); None when idle
    hung: bool = False  # killed by the hang watch: its death fails its claims with WorkerHung
    peak_rss_mb: float = 0.0  # the largest peak any of its processes reported
    clock: WorkTime = field(default_factory=WorkTime)  # busy and idle, across its processes

    def name(self) -> str:
        return f"{self.label} (pid {self.pid or (self.process.pid if self.process else 0)})"

    def peak_rss_so_far(self) -> float:
        """The largest peak its processes reported, or its live process's own as the kernel keeps it,
        whichever is larger: a worker still loading its model when a short sync ends reported none."""
        try:
            pid = self.process.pid if self.process is not None and self.process.is_alive() else None
        except ValueError:  # the process object was closed: its process is gone
            pid = None
        return self.peak_rss_mb if pid is None else max(self.peak_rss_mb, process_peak_rss_mb(pid))

    def start(self, ctx: SpawnContext) -> None:
        """Start a (new) process for this worker, loading the model of its spec."""
        task_r, task_w = ctx.Pipe(duplex=False)
        result_r, result_w = ctx.Pipe(duplex=False)
        process = ctx.Process(target=worker_main, args=(task_r, result_w, self.spec),
                              name=f"indexer-{self.label}", daemon=True)
        process.start()
        task_r.close()  # the worker holds these ends; ours would hide its death (no EOF)
        result_w.close()
        self.process, self.tasks, self.results = process, task_w, result_r
        self.state, self.pid, self.held = "starting", process.pid or 0, []
        # A claim is bigger than a pipe's buffer: a send to a worker that does not read (hung, stopped)
        # blocks. Its own thread sends, so that nothing holding the runner's lock ever waits on it.
        self.outbox = queue.SimpleQueue()
        threading.Thread(target=_send_tasks, args=(task_w, self.outbox), daemon=True,
                         name=f"indexer-send-{self.index}").start()

    def take(self, task: Task) -> None:
        """Send it `task`; if it died just now, its sentinel fails the task."""
        if not self.held:  # the hang clock starts when work starts
            self.last_beat = time.monotonic()
        task.sent_at = time.monotonic()
        self.held.append(task)
        assert self.outbox is not None
        self.outbox.put(Claim(task.id, task.texts))

    def answered(self, task_id: int, started: float) -> Task | None:
        """Claim `task_id`, which the worker took up at `started`, came back (done or failed): no longer
        held, its time counted as busy. None: not held (failed already when the worker died)."""
        task = next((t for t in self.held if t.id == task_id), None)
        if task is not None:
            self.held.remove(task)
            self.clock.claim_done(started, time.monotonic())
        return task

    def reported(self, limits: Limits, peak_rss_mb: float) -> str | None:
        """Keep what the worker reports with its model loaded and with each claim done: its peak memory
        and its batch limits. The limits go into its spec, which a restart loads with, so a restarted
        worker keeps the limits it found. Says so when out-of-memory shrank its batch."""
        self.peak_rss_mb = max(self.peak_rss_mb, peak_rss_mb)
        shrank = None
        if limits.batch_size < self.spec.batch_size:
            shrank = (f"{self.label} ran out of memory; its batch size went from {self.spec.batch_size} "
                      f"to {limits.batch_size} for the rest of the run")
        if (limits.batch_size, limits.batch_tokens) != (self.spec.batch_size, self.spec.batch_tokens):
            self.spec = replace(self.spec, batch_size=limits.batch_size, batch_tokens=limits.batch_tokens)
        return shrank

    def in_hand_since(self) -> float | None:
        """When it was sent the claim it works on, if it works on one."""
        return self.held[0].sent_at if self.held and self.state == "ready" else None

    def mark_dead(self) -> list[Task]:
        """Its process has died: close its pipes, stop its clock; the claims it held, to fail."""
        lost, self.held = self.held, []
        if lost:  # its time on them counts as busy; its restart's model load as nothing
            self.clock.claim_done(lost[0].sent_at, time.monotonic())
        self.clock.until = None
        self.state = "dead"
        self.deaths += 1
        self.last_beat = None
        self.close_pipes()
        return lost

    def close_pipes(self) -> None:
        if self.outbox is not None:
            self.outbox.put(_STOP_SENDING)
        for conn in (self.tasks, self.results):
            if conn is not None:
                conn.close()


def stop_all(workers: Sequence[WorkerHandle], grace: float = 5.0) -> None:
    """Idle workers are told to exit, the others terminated; all are joined (killed after `grace`)."""
    live = [w for w in workers if w.process is not None and w.state != "dead"]
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
        worker.close_pipes()
        with contextlib.suppress(ValueError):
            worker.process.close()  # type: ignore[union-attr]


def work_time_stats(workers: Sequence[WorkerHandle], now: float, last_submit: float) -> dict[str, object]:
    """busy/idle/starved_seconds_per_worker: each worker's time from its first claim up to `now`, with a
    claim in hand or without; starved is the idle while work was pending: between a claim's result and
    the worker's next claim, or after it until the driver's last submission, `last_submit` (see
    WorkTime). idle_share and starved_share: of all workers' time together (None before any claim)."""
    # Rounded to the millisecond first, so that the shares are those of the figures reported.
    times = [tuple(round(t, 3) for t in w.clock.so_far(w.in_hand_since(), now, last_submit))
             for w in workers]
    total = sum(busy + idle for busy, idle, _ in times)
    return {"busy_seconds_per_worker": [busy for busy, _, _ in times],
            "idle_seconds_per_worker": [idle for _, idle, _ in times],
            "starved_seconds_per_worker": [starved for _, _, starved in times],
            "idle_share": round(sum(idle for _, idle, _ in times) / total, 4) if total else None,
            "starved_share": round(sum(s for _, _, s in times) / total, 4) if total else None}


def exit_reason(exitcode: int | None) -> str:
    """How a worker process ended, for messages."""
    if exitcode is None:
        return "stopped answering"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"
