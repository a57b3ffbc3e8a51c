"""Reading an index on read-only media (issue 10, item 11).

`status`, `verify`, `export` and `indexer.open().vectors()` work on an index whose directory cannot be
written: the manifest is opened with SQLite's `immutable=1` there (no writer can exist), with
`mode=ro` where `read_only=True` is asked on a writable one. What writes (sync, verify --repair, compact,
retry) is refused with a message that says so and suggests nothing destructive.

Real read-only media: the index directory is bind-mounted read-only onto itself in a private mount
namespace (`unshare -rm`), so the check does not depend on permissions, which do not stop root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import indexer
from indexer.cli import cli

from helpers import fake_vector, write_jsonl

DOCS = {f"d{i:02d}": f"read only {i} " + "x " * (i % 4) for i in range(30)}


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def index(tmp_path: Path) -> Path:
    ix = tmp_path / "idx"
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    result = CliRunner().invoke(cli, ["sync", str(src), "--index", str(ix), "--model", "fake:16"],
                                env={"INDEXER_CHUNK_ROWS": "8"})
    assert result.exit_code == 0, result.output
    return ix


def test_read_only_open_reads_everything_and_writes_nothing(index: Path, tmp_path: Path) -> None:
    before = snapshot(index)
    with indexer.open(index, read_only=True) as idx:
        assert idx.status()["done"] == len(DOCS)
        assert idx.verify().ok
        ids, vecs = idx.vectors()
        matrix = np.asarray(vecs)
        assert idx.export(tmp_path / "out.npy", tmp_path / "ids.txt") == len(DOCS)
        for action in (lambda: idx.verify(repair=True), idx.compact, idx.retry):
            with pytest.raises(indexer.IndexerError, match="open read-only") as exc:
                action()
            assert "rebuild" not in str(exc.value) and "Nothing was changed" in str(exc.value)
    assert all(np.array_equal(row, fake_vector(DOCS[i])) for i, row in zip(ids, matrix, strict=True))
    assert np.array_equal(np.load(tmp_path / "out.npy"), matrix)
    # The database files keep their bytes (SQLite may add its -wal/-shm beside them, as for any reader).
    after = snapshot(index)
    assert {k: v for k, v in after.items() if not k.endswith(("-wal", "-shm"))} == before


READER = """
import json, sys, numpy as np, indexer
ix = sys.argv[1]
with indexer.open(ix) as idx:
    ids, vecs = idx.vectors()
    print(json.dumps({"read_only": idx.manifest.read_only, "ids": list(ids),
                      "rows": np.asarray(vecs).tolist(), "get": idx.get([ids[0]]).tolist()}))
"""


def in_read_only_mount(index: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) with `index` bind-mounted read-only onto itself, in a private namespace."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) for a read-only bind mount")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {index} {index}"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a read-only bind mount here (unshare -rm: {probe.stderr.strip()})")
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {index} {index} && {script}"],
                          capture_output=True, text=True, timeout=300)


def test_on_read_only_media_reading_works_and_writing_is_refused(index: Path, tmp_path: Path) -> None:
    before = snapshot(index)
    py = sys.executable
    out = tmp_path / "out"
    out.mkdir()
    reader = tmp_path / "reader.py"
    reader.write_text(READER)
    script = " && ".join([
        f"touch {index}/probe 2>/dev/null; test ! -e {index}/probe",  # really read-only
        f"{py} -m indexer status {index} --json > {out}/status.json",
        f"{py} -m indexer verify {index} > {out}/verify.txt",
        f"{py} -m indexer export {index} --out {out}/v.npy --ids {out}/ids.txt",
        f"{py} {reader} {index} > {out}/reader.json",
        f"({py} -m indexer verify {index} --repair > {out}/repair.txt 2>&1; echo $? > {out}/repair.rc)",
        f"({py} -m indexer compact {index} > {out}/compact.txt 2>&1; echo $? > {out}/compact.rc)",
        f"({py} -m indexer sync {tmp_path}/docs.jsonl --index {index} > {out}/sync.txt 2>&1;"
        f" echo $? > {out}/sync.rc)",
    ])
    done = in_read_only_mount(index, script)
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads((out / "status.json").read_text())
    assert status["done"] == len(DOCS) and status["model"] == "fake:16"
    assert "verify: 30 vectors checked, ok" in (out / "verify.txt").read_text()
    got = json.loads((out / "reader.json").read_text())
    assert got["read_only"] is True
    rows = np.asarray(got["rows"], dtype=np.float32)
    assert all(np.array_equal(row, fake_vector(DOCS[i])) for i, row in zip(got["ids"], rows, strict=True))
    assert np.array_equal(np.load(out / "v.npy"), rows)
    for action in ("repair", "compact", "sync"):
        message = (out / f"{action}.txt").read_text()
        assert (out / f"{action}.rc").read_text().strip() == "1", message
        assert "open read-only" in message and "Traceback" not in message, message
        assert "rebuild" not in message and "backup" not in message, message
    assert snapshot(index) == before  # not a byte, not an mtime, no file added


def test_permissions_alone(index: Path, tmp_path: Path) -> None:
    """chmod a-w on the directory and its files: what a non-root user on a read-only share sees."""
    if os.geteuid() == 0:
        pytest.skip("running as root, which chmod does not stop: the read-only mount test covers this")
    before = snapshot(index)
    paths = [index, *index.rglob("*")]
    modes = {p: p.stat().st_mode for p in paths}
    try:
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        with indexer.open(index) as idx:
            assert idx.manifest.read_only
            _, vecs = idx.vectors()
            assert len(np.asarray(vecs)) == len(DOCS) and idx.verify().ok
    finally:
        for p in reversed(paths):
            p.chmod(modes[p])
    assert snapshot(index) == before
