"""The Ray runner in the driver: `RayRunner` sends the claims to the actors (_ray_actor.py) that
ray_actors.make started, polls the busy ones for progress, and follows Ray's restarts of the lost.

Each claim goes to the least busy live actor (round robin among equals), two claims per actor in flight
so an actor never waits for the driver's write and commit. An actor that dies (process killed, node
lost, out of memory) fails its claims with `WorkerLost`, so the driver releases them to pending; Ray
restarts the actor (up to `max_restarts` times) and it gets work again once it has reloaded the model.
An actor that cannot come back is dropped and the rest go on; when none is left, or a restart takes
longer than `restart_timeout`, the claims fail with an IndexerError instead of waiting forever.

Progress and hangs: each actor counts the texts of its current claim's finished batches, and the driver
polls every busy actor for that count (a `progress` method in its own concurrency group, so it answers
while `embed` runs) about every second. A new count is the batch progress the driver reports, and the
actor's sign of life: an actor that holds a claim and shows no new count for longer than the hang
deadline (runners/_liveness.py; a SIGSTOPped actor does not answer the poll at all) is killed (Ray
restarts it, as after any death) and its claims fail with `WorkerHung`, so they go back to pending.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..embedders import ModelInfo
from ..errors import IndexerError
from . import BatchDone, EmbedResult, WorkerHung, WorkerLost
from ._liveness import HangRule, Heartbeats, hang_warning
from ._ray_actor import PROGRESS_GROUP

__all__ = ["ActorSlot", "RayRunner", "first_line"]

CLAIMS_PER_ACTOR = 2


@dataclass(eq=False)
class ActorSlot:
    """One actor as the driver sees it."""

    index: int
    handle: Any
    pid: int = 0
    host: str = ""
    node: str = ""  # the Ray node id (hosts of one machine's nodes share a name)
    busy: int = 0
    state: str = "ready"  # ready | restarting | dead
    epoch: int = 0  # +1 per death noticed, so that the claims lost in one death count it once
    deaths: int = 0
    timer: threading.Timer | None = field(default=None, repr=False)
    last_beat: float | None = None  # its last new progress count (or start of work); None when idle
    polling: bool = False  # a progress poll is out
    seen: tuple[int, int] = (-1, 0)  # the last (claim, texts done) it reported
    hung_epoch: int = -1  # the epoch in which the hang watch killed it
    peak_rss_mb: float = 0.0

    def name(self) -> str:
        return f"Ray worker {self.index} (pid {self.pid} on {self.host})"


def first_line(exc: BaseException) -> str:
    """The exception's type and the first line of its message, for a message of one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class RayRunner:
    """A Runner whose workers are Ray actors; see the module docstring."""

    def __init__(self, ray: Any, slots: list[ActorSlot], info: ModelInfo, *, started_ray: bool,
                 max_restarts: int, restart_timeout: float) -> None:
        self.ray = ray
        self.max_restarts = max_restarts
        self.slots = slots
        self.info = info
        self.started_ray = started_ray
        self.restart_timeout = restart_timeout
        self.capacity = CLAIMS_PER_ACTOR * len(slots)
        self.lost = 0  # deaths noticed (a death that took two claims counts once)
        self.hung = 0  # of which the hang watch caused
        self._warnings: list[str] = []
        self.heartbeats = Heartbeats()
        self._lock = threading.RLock()
        self._waiting: list[tuple[list[str], Future[EmbedResult], BatchDone | None]] = []
        self._refs: dict[Future[EmbedResult], Any] = {}
        self._on_batch: dict[int, BatchDone] = {}  # by task id
        self._task_ids = itertools.count()
        self._rr = 0
        self._closed = False
        # Ray completes ObjectRef futures on its own threads; all bookkeeping happens on this one.
        self._events = ThreadPoolExecutor(1, thread_name_prefix="indexer-ray")
        self._watch_stop = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="indexer-ray-watch", daemon=True)
        self._watcher.start()

    # -- the Runner protocol

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        out: Future[EmbedResult] = Future()
        with self._lock:
            if self._closed:
                out.set_exception(IndexerError("the Ray runner is closed"))
                return out
            slot = self._pick()
            if slot is not None:
                self._dispatch(slot, texts, out, on_batch)
            elif any(s.state == "restarting" for s in self.slots):
                self._waiting.append((texts, out, on_batch))  # sent as soon as an actor is back
            else:
                out.set_exception(self._all_lost())
        return out

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting, self._waiting = self._waiting, []
            for slot in self.slots:
                if slot.timer is not None:
                    slot.timer.cancel()
        self._watch_stop.set()
        for _, future, _ in waiting:
            future.set_exception(IndexerError("the Ray runner was closed"))
        for slot in self.slots:
            self._kill(slot)
        self._events.shutdown(wait=False, cancel_futures=True)
        if self.started_ray:
            self.ray.shutdown()

    # -- dispatch

    def _pick(self) -> ActorSlot | None:
        ready = [s for s in self.slots if s.state == "ready"]
        if not ready:
            return None
        n = len(self.slots)
        slot = min(ready, key=lambda s: (s.busy, (s.index - self._rr) % n))
        self._rr = (slot.index + 1) % n
        return slot

    def _dispatch(self, slot: ActorSlot, texts: list[str], out: Future[EmbedResult],
                  on_batch: BatchDone | None) -> None:
        epoch = slot.epoch
        task = next(self._task_ids)
        try:
            ref = slot.handle.embed.remote(texts, task)
        except Exception as exc:  # the driver lost Ray itself: no use trying again
            out.set_exception(IndexerError(f"could not send a claim to {slot.name()}: {first_line(exc)}; "
                                           "check the Ray cluster (`ray status`), then run the sync again"))
            return
        if slot.busy == 0:  # the hang clock starts when work starts
            slot.last_beat = time.monotonic()
        slot.busy += 1
        self._refs[out] = ref
        if on_batch is not None:
            self._on_batch[task] = on_batch
        ref.future().add_done_callback(lambda done: self._post(self._settle, slot, epoch, task, done, out))

    def _post(self, fn: Any, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # closed: nobody waits for the answer any more
            self._events.submit(fn, *args)

    def _settle(self, slot: ActorSlot, epoch: int, task: int, done: Future[Any],
                out: Future[EmbedResult]) -> None:
        with self._lock:
            slot.busy -= 1
            self._refs.pop(out, None)
            self._on_batch.pop(task, None)
            if epoch == slot.epoch:
                slot.last_beat = self.heartbeats.beat(slot.last_beat, slot.busy > 0)
        try:
            self._resolve(slot, epoch, done, out)
        except BaseException as exc:  # never leave the driver waiting on a future nobody will resolve
            if not out.done():
                out.set_exception(exc)

    def _resolve(self, slot: ActorSlot, epoch: int, done: Future[Any], out: Future[EmbedResult]) -> None:
        exceptions = self.ray.exceptions
        exc = done.exception()
        if exc is None:
            vectors, failures = done.result()
            # Copy out of Ray's shared memory: the array outlives the object and, maybe, Ray itself.
            out.set_result((np.array(vectors, dtype=np.float32), dict(failures)))
        elif isinstance(exc, exceptions.RayTaskError):  # the embedding code itself raised
            cause = getattr(exc, "cause", None)
            out.set_exception(cause if isinstance(cause, IndexerError) else exc)
        elif isinstance(exc, exceptions.RayError):  # actor died, node lost, OOM kill, object lost
            self._lost(slot, epoch, exc)
            death = (id(self), slot.index, epoch)
            if slot.hung_epoch == epoch:
                out.set_exception(WorkerHung(f"{slot.name()} hung (no batch finished within the hang "
                                             "deadline) and was killed", death))
            else:
                out.set_exception(WorkerLost(f"{slot.name()} was lost ({first_line(exc)})", death))
        else:
            out.set_exception(exc)

    # -- progress and hangs

    def watch_for_hangs(self, rule: HangRule) -> None:
        """Take an actor for hung by `rule` (the driver sets it from its Settings)."""
        self.heartbeats = Heartbeats(rule)

    def stats(self) -> dict[str, object]:
        """For the sync summary's backend_stats (its "warnings" join the summary's warnings)."""
        with self._lock:
            return {"backend": "ray", "workers": len(self.slots), "worker_deaths": self.lost,
                    "workers_hung": self.hung, "nodes": [s.node for s in self.slots],
                    "peak_rss_mb_per_worker": [s.peak_rss_mb for s in self.slots],
                    "warnings": list(self._warnings)}

    def _watch(self) -> None:
        """Poll busy actors for progress, and kill those past the hang deadline."""
        while not self._watch_stop.wait(min(0.5, self.heartbeats.poll_interval())):
            with contextlib.suppress(Exception):  # Ray shutting down under us: the next round or none
                self._poll_and_check()

    def _poll_and_check(self) -> None:
        deadline = self.heartbeats.deadline()
        now = time.monotonic()
        with self._lock:
            if self._closed:
                return
            for slot in self.slots:
                if slot.state != "ready" or not slot.busy:
                    continue
                if (deadline is not None and slot.last_beat is not None and now - slot.last_beat > deadline
                        and slot.hung_epoch != slot.epoch):
                    self._kill_hung(slot, now - slot.last_beat, deadline)
                elif not slot.polling:
                    slot.polling = True
                    epoch = slot.epoch
                    ref = slot.handle.progress.options(concurrency_group=PROGRESS_GROUP).remote()
                    ref.future().add_done_callback(
                        lambda done, slot=slot, epoch=epoch: self._post(self._progressed, slot, epoch, done))

    def _progressed(self, slot: ActorSlot, epoch: int, done: Future[Any]) -> None:
        report: BatchDone | None = None
        with self._lock:
            if epoch != slot.epoch or self._closed:
                return
            slot.polling = False
            if done.exception() is not None:  # lost: the embed call's failure says so
                return
            task, texts_done, peak = done.result()
            slot.peak_rss_mb = max(slot.peak_rss_mb, float(peak))
            last_task, last_done = slot.seen
            if (task, texts_done) == slot.seen or task < 0:
                return
            slot.seen = (task, texts_done)
            slot.last_beat = self.heartbeats.beat(slot.last_beat, slot.busy > 0)
            new = texts_done - (last_done if task == last_task else 0)
            report = self._on_batch.get(task)
        if report is not None and new > 0:
            report(new)

    def _kill_hung(self, slot: ActorSlot, silent_s: float, deadline: float) -> None:
        """Kill a hung actor (under the lock); Ray restarts it and its claims fail as lost."""
        slot.hung_epoch = slot.epoch
        self._warnings.append(f"ray: {hang_warning(slot.name(), silent_s, deadline)}")
        with contextlib.suppress(Exception):
            self.ray.kill(slot.handle, no_restart=False)
        if slot.host == socket.gethostname() and slot.pid:  # a stopped process does not answer Ray
            with contextlib.suppress(Exception):
                import psutil

                if psutil.Process(slot.pid).name().startswith("ray::"):  # the actor's, not a reused pid
                    os.kill(slot.pid, signal.SIGKILL)

    # -- losing and regaining actors

    def _lost(self, slot: ActorSlot, epoch: int, exc: BaseException) -> None:
        with self._lock:
            if epoch != slot.epoch or slot.state != "ready" or self._closed:
                return  # this death was noticed already
            self.hung += slot.hung_epoch == slot.epoch
            slot.epoch += 1
            slot.deaths += 1
            self.lost += 1
            slot.last_beat, slot.polling, slot.seen = None, False, (-1, 0)
            if slot.deaths > self.max_restarts:  # Ray would not restart it again; and no endless loop
                self._bury(slot)
                return
            slot.state = "restarting"
            # Ray restarts the actor if it may; the probe answers once the model is loaded again, or
            # fails if Ray gave up on it. The timer makes sure we never wait for it forever.
            epoch = slot.epoch
            probe = slot.handle.ready.remote()
            probe.future().add_done_callback(lambda done: self._post(self._probed, slot, epoch, done))
            slot.timer = threading.Timer(self.restart_timeout, self._post,
                                         (self._restart_timed_out, slot, epoch))
            slot.timer.daemon = True
            slot.timer.start()

    def _probed(self, slot: ActorSlot, epoch: int, done: Future[Any]) -> None:
        with self._lock:
            if epoch != slot.epoch or slot.state != "restarting" or self._closed:
                return
            exc = done.exception()
            if exc is None:
                info, error, pid, host, node = done.result()
                if error is None and info == self.info:
                    slot.state, slot.pid, slot.host, slot.node = "ready", pid, host, node
                    if slot.timer is not None:
                        slot.timer.cancel()
                    self._flush()
                    return
            elif isinstance(exc, self.ray.exceptions.ActorUnavailableError):  # not back yet: ask again
                probe = slot.handle.ready.remote()
                probe.future().add_done_callback(lambda again: self._post(self._probed, slot, epoch, again))
                return
            self._bury(slot)

    def _restart_timed_out(self, slot: ActorSlot, epoch: int) -> None:
        with self._lock:
            if epoch == slot.epoch and slot.state == "restarting" and not self._closed:
                self._bury(slot)

    def _bury(self, slot: ActorSlot) -> None:
        """Give up on an actor; the others go on. Without any, the waiting claims fail."""
        slot.state = "dead"
        if slot.timer is not None:
            slot.timer.cancel()
        self._kill(slot)
        self.capacity = max(1, CLAIMS_PER_ACTOR * sum(s.state != "dead" for s in self.slots))
        self._flush()

    def _flush(self) -> None:
        """Send the claims that waited for an actor; fail them if no actor can ever take them."""
        while self._waiting:
            slot = self._pick()
            if slot is None:
                break
            texts, out, on_batch = self._waiting.pop(0)
            self._dispatch(slot, texts, out, on_batch)
        if self._waiting and not any(s.state == "restarting" for s in self.slots):
            waiting, self._waiting = self._waiting, []
            for _, out, _ in waiting:
                out.set_exception(self._all_lost())

    def _all_lost(self) -> IndexerError:
        return IndexerError(
            f"all {len(self.slots)} Ray workers were lost and could not be restarted "
            f"({sum(s.deaths for s in self.slots)} deaths); the claims in flight went back to pending. "
            "Check the Ray cluster (`ray status`) and the workers' logs, then run the same sync again.")

    def _kill(self, slot: ActorSlot) -> None:
        with contextlib.suppress(Exception):  # already gone, or Ray is shutting down
            self.ray.kill(slot.handle, no_restart=True)

