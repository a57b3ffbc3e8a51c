"""When a worker that holds a claim is taken to hang, shared by the processes, gpus and ray runners.

A worker shows it is alive by finishing batches (forward passes), not claims: a worker that is slow on a
long claim but keeps finishing batches is never taken for hung. The deadline is measured, not guessed:
the gaps between a busy worker's batches so far (all workers of the run together), and a worker is hung
when its current gap exceeds max(`seconds`, `factor` x their median). Before any gap is measured the
floor `seconds` alone applies, and `seconds` = 0 turns the watch off.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass

__all__ = ["HangRule", "Heartbeats", "hang_warning", "worker_peak_rss_mb"]


@dataclass(frozen=True)
class HangRule:
    seconds: float  # the floor; 0: never take a worker for hung
    factor: float

    @classmethod
    def default(cls) -> HangRule:
        from ..settings import Settings

        s = Settings()
        return cls(s.hang_seconds, s.hang_factor)


class Heartbeats:
    """The measured gaps between batches, and the deadline they give (thread-safe)."""

    def __init__(self, rule: HangRule | None = None, window: int = 512) -> None:
        self.rule = rule or HangRule.default()
        self._gaps: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def gap(self, seconds: float) -> None:
        with self._lock:
            self._gaps.append(seconds)

    def beat(self, last: float | None, busy: bool) -> float | None:
        """A worker whose previous sign of life was at `last` finished a batch or a claim just now: that
        gap counts. Returns its new last beat: now while it is busy, None once it is idle (nothing to
        wait for, so it cannot hang)."""
        now = time.monotonic()
        if last is not None:
            self.gap(now - last)
        return now if busy else None

    def deadline(self) -> float | None:
        """Seconds without a batch after which a busy worker is hung; None when the watch is off."""
        if self.rule.seconds <= 0:
            return None
        with self._lock:
            median = statistics.median(self._gaps) if self._gaps else 0.0
        return max(self.rule.seconds, self.rule.factor * median)

    def poll_interval(self) -> float:
        """How often to look: often enough to notice a hang soon after its deadline, at most once a
        second otherwise."""
        deadline = self.deadline()
        return 1.0 if deadline is None else min(1.0, max(0.05, deadline / 4))


def hang_warning(worker: str, silent_s: float, deadline: float) -> str:
    """The run's warning about a worker that the hang watch killed."""
    return (f"{worker} finished no batch for {silent_s:.0f}s (the hang deadline is {deadline:.0f}s); "
            "killed it and gave its claims back to pending")


def process_peak_rss_mb(pid: int | str = "self") -> float:
    """A process's peak resident memory so far, in MiB, as the kernel keeps it (Linux: VmHWM, which
    starts afresh at exec); 0 where the platform does not say or the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:  # not Linux, or the process is gone
        pass
    return 0.0


def worker_peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MiB, as the kernel keeps it (so no peak is missed
    between samples); 0 where the platform does not say. Linux: VmHWM; not ru_maxrss, which a spawned
    worker inherits from the process it was forked from."""
    if peak := process_peak_rss_mb():
        return peak
    try:
        import resource
    except ImportError:  # not a Unix
        return 0.0
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere
