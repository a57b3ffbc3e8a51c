"""SIGTERM and SIGHUP stop a sync the way Ctrl-C does.

Slurm, systemd, Kubernetes and `kill` send SIGTERM; a closed terminal sends SIGHUP. Python's default for
both is to die at once: claims stay active until their lease expires and the run stays `running`. Within
`stop_signals()` they raise StopSignal (a KeyboardInterrupt) in the main thread instead, so the sync
releases its claims, stops its workers and records the run `interrupted`; the CLI exits 128 + signal.

Handlers are installed only where the signal's handler is still the default: a handler the program
installed is left alone, and so is a SIGHUP ignored under nohup. An explicit handler is also what makes
SIGTERM work at all in a process that runs as PID 1 in a container, where the kernel drops signals
whose action is the default. After the first signal, further ones are ignored until the sync has
cleaned up (SIGKILL still ends it at once). Within `held_stop()` a stop signal waits for the block's end.
"""

from __future__ import annotations

import functools
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import ParamSpec, TypeVar

from .errors import StopSignal

__all__ = ["STOP_SIGNALS", "held_stop", "keep_stop_handlers", "stop_signals", "stoppable"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
P = ParamSpec("P")
R = TypeVar("R")


class _Hold:
    """How many `held_stop` blocks the main thread is in, and the stop signal that came meanwhile."""

    depth = 0
    signum: int | None = None


@contextmanager
def stop_signals() -> Iterator[None]:
    """Within, SIGTERM and SIGHUP raise StopSignal (see the module docstring); restored on exit."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
        yield
        return
    previous: dict[signal.Signals, object] = {}

    def stop(signum: int, frame: FrameType | None) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # one stop is enough: let the clean-up finish
        if _Hold.depth:
            _Hold.signum = signum  # raised when the held block ends
            return
        raise StopSignal(signum)

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, stop)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]


@contextmanager
def held_stop() -> Iterator[None]:
    """A stop signal that comes within is raised as the block ends, not inside it: for a call that a
    StopSignal must not cut in two, such as zarr's, which hands a coroutine to its event loop thread
    (cut between making the coroutine and handing it over, it left "coroutine ... was never awaited"
    warnings on stderr at exit)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _Hold.depth += 1
    try:
        yield
    finally:
        _Hold.depth -= 1
        if not _Hold.depth and _Hold.signum is not None:
            signum, _Hold.signum = _Hold.signum, None
            raise StopSignal(signum)


def stoppable(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn` run within stop_signals()."""

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with stop_signals():
            return fn(*args, **kwargs)

    return run


@contextmanager
def keep_stop_handlers() -> Iterator[None]:
    """Put back the stop-signal handlers a library replaces within (ray.init installs its own SIGTERM
    handler, which exits without releasing claims)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
