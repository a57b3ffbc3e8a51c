"""Sources that end early never delete documents (issue 10, items 4, 10 and 13).

`--delete-missing` decides that a document is gone because a source did not hold it, so it may only
act on a source read whole. A JSONL file cut mid-record (`head -c`), a producer killed mid-stream, an
empty stdin (`< /dev/null`), a CSV cut inside a quoted field or mid-row: each used to exit 0 after
deleting what it did not reach. Now the records read are synced, nothing is deleted, a warning names
the file and line, and the sync exits 2 when `--delete-missing` was asked. Everything runs for real:
the CLI in a child process where stdin matters, CliRunner elsewhere, real files, the fake model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def indexer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "indexer", *args]


def test_sync_from_a_closed_stdin_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    # `<&-`: the child starts with file descriptor 0 closed, so Python's sys.stdin is None.
    p = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh",
                        *indexer_cmd("sync", "-", "--index", str(index), "--model", "fake:8")],
                       env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "stdin is closed" in p.stderr and "Traceback" not in p.stderr
    assert not index.exists()
