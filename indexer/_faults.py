"""Named crash points for the crash tests: INDEXER_CRASH_AT=NAME[:N] kills the process with SIGKILL the
N-th time (default first) execution reaches `crash_point(NAME)`. Unset, a crash point is one dict lookup.
"""

from __future__ import annotations

import os
import signal

_target, _, _nth = os.environ.get("INDEXER_CRASH_AT", "").partition(":")
_remaining = {_target: int(_nth or 1)} if _target else {}


def crash_point(name: str) -> None:
    if name in _remaining:
        _remaining[name] -= 1
        if _remaining[name] <= 0:
            os.kill(os.getpid(), signal.SIGKILL)
