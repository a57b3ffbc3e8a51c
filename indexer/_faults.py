"""Named crash points for the crash tests: INDEXER_CRASH_AT=NAME[:N] kills the process with SIGKILL the
N-th time (default first) execution reaches `crash_point(NAME)`. INDEXER_PAUSE_AT=NAME[:N] stops it there
with SIGSTOP instead, once (the fencing tests resume it with SIGCONT after its lease expired). Unset, a
crash point is two dict lookups.
"""

from __future__ import annotations

import os
import signal


def _parse(var: str) -> dict[str, int]:
    target, _, nth = os.environ.get(var, "").partition(":")
    return {target: int(nth or 1)} if target else {}


_remaining = _parse("INDEXER_CRASH_AT")
_pause_remaining = _parse("INDEXER_PAUSE_AT")


def crash_point(name: str) -> None:
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
    if name in _pause_remaining:
        _pause_remaining[name] -= 1
        if _pause_remaining[name] == 0:
            os.kill(os.getpid(), signal.SIGSTOP)
