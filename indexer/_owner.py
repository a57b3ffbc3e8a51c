"""Who holds a claim: host, pid and process start time, so that a dead local owner is seen at once."""

from __future__ import annotations

import os
import socket
from functools import cache

import psutil


def current_owner() -> str:
    return _cached_owner(os.getpid())  # keyed by pid: a forked child is another owner than its parent


@cache
def _cached_owner(pid: int) -> str:
    return _owner_of(pid)


def _owner_of(pid: int) -> str:
    return f"{socket.gethostname()}|{pid}|{psutil.Process(pid).create_time():.3f}"


def owner_is_dead(owner: str) -> bool:
    """True only when the owner is a process on this host that no longer runs."""
    host, _, rest = owner.partition("|")
    pid_text, _, _started = rest.partition("|")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False  # another machine's worker: only its lease expiry can free its claim
    try:
        return _owner_of(int(pid_text)) != owner
    except psutil.NoSuchProcess:
        return True
