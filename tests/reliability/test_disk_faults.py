"""Disk full and failing I/O during a sync: a clear error, a readable manifest, nothing marked done
without its vector, and a resumed sync completes once the fault is gone (issue 5).

The faults are injected two ways: in-process by replacing the store's `open` / `os.replace` /
`os.fsync` with versions that raise OSError on the N-th call (fakes, for these tests only), and for real
in a child process whose file size limit (RLIMIT_FSIZE) is below one chunk.
"""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import indexer
import indexer.store
from indexer import IndexerError

from helpers import fake_vector, write_jsonl

DOCS = {f"doc-{i}": f"text number {i} " + "word " * (i % 7) for i in range(40)}


def _fail_on_call(real: Callable[..., Any], nth: int, err: int = errno.ENOSPC,
                  counts: Callable[..., bool] = lambda *a: True) -> Callable[..., Any]:
    """`real`, except that the `nth` call for which `counts(*args)` holds raises OSError(err)."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += counts(*args)
        if counts(*args) and calls["n"] == nth:
            raise OSError(err, os.strerror(err), str(args[0]) if args else None)
        return real(*args, **kwargs)

    return wrapper


class _FailingWriteFile:
    def __init__(self, f: Any) -> None:
        self._f = f

    def __enter__(self) -> _FailingWriteFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def write(self, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def _assert_consistent(index_dir: Path) -> dict[str, Any]:
    with indexer.open(index_dir) as idx:
        report = idx.verify()
        assert report.ok, report.problems
        ids, vecs = idx.vectors()
        matrix = np.asarray(vecs)
        for doc_id, row in zip(ids, matrix, strict=True):
            np.testing.assert_array_equal(row, fake_vector(DOCS[doc_id]))
        assert idx.manifest.integrity_check() == "ok"
        return idx.status()


@pytest.mark.parametrize("grouped", [False, True], ids=["one-claim-a-transaction", "grouped"])
@pytest.mark.parametrize("fault", ["write", "replace", "fsync"])
def test_io_fault_mid_sync_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str,
                                       grouped: bool, small_settings: indexer.Settings,
                                       fake_embedder: Any) -> None:
    """The third chunk's write fails. One claim a transaction: the two chunks before are done. Grouped
    (groups of 1, then 2 chunks: the fast fake model): the first group is done; the second group's
    first chunk was written but never committed (an orphan), and the whole group goes back. The fault
    is the third chunk's, by its path, not the third call's: a group's chunks are written by several
    threads, beside the commit of the group before, so calls come in no fixed order."""
    small_settings = replace(small_settings, claim_seconds=60.0 if grouped else 0.0)
    committed = (1 if grouped else 2) * small_settings.chunk_rows
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    index_dir = tmp_path / "idx"
    third = f"{os.sep}c{os.sep}2{os.sep}"  # in the path of chunk 2's files: vectors.zarr/c/2/...
    if fault == "write":
        real_open = open

        def failing_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            f = real_open(path, mode, *args, **kwargs)
            return _FailingWriteFile(f) if "w" in mode and third in str(path) else f

        monkeypatch.setattr(indexer.store, "open", failing_open, raising=False)
    elif fault == "replace":
        monkeypatch.setattr("indexer.store.os.replace", _fail_on_call(
            os.replace, 1, counts=lambda src, dst: third in str(dst)))
    else:  # the fsync of chunk 2's file (not of its directory, whose path ends in c/2)
        monkeypatch.setattr("indexer.store.os.fsync", _fail_on_call(
            os.fsync, 1, errno.EIO, counts=lambda fd: third in os.readlink(f"/proc/self/fd/{fd}")))

    with pytest.raises(IndexerError, match="cannot write chunk"):
        indexer.sync(index_dir, paths=[str(src)], settings=small_settings, embedder=fake_embedder)
    monkeypatch.undo()

    status = _assert_consistent(index_dir)
    assert status["done"] == committed
    assert status["active_claims"] == 0  # the failed claim was released, not left to expire
    assert not list((index_dir / "vectors.zarr").rglob("*.partial"))

    summary = indexer.sync(index_dir, paths=[str(src)], settings=small_settings, embedder=fake_embedder)
    assert summary.embedded == len(DOCS) - committed
    status = _assert_consistent(index_dir)
    assert status["done"] == len(DOCS) and status["pending"] == 0


def _limit_file_size(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_growing_the_array_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         small_settings: indexer.Settings, fake_embedder: Any) -> None:
    """zarr.json cannot be rewritten (full disk) while a claim grows the array: the claim's transaction
    rolls back, nothing is claimed, and the next sync completes."""
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    index_dir = tmp_path / "idx"
    monkeypatch.setattr("indexer.store.os.replace", _fail_on_call(
        os.replace, 2, counts=lambda src, dst: str(dst).endswith("zarr.json")))
    with pytest.raises(IndexerError, match="cannot grow"):
        indexer.sync(index_dir, paths=[str(src)], settings=small_settings, embedder=fake_embedder)
    monkeypatch.undo()
    status = _assert_consistent(index_dir)
    assert status["active_claims"] == 0 and status["done"] + status["pending"] == len(DOCS)
    indexer.sync(index_dir, paths=[str(src)], settings=small_settings, embedder=fake_embedder)
    assert _assert_consistent(index_dir)["done"] == len(DOCS)


def test_disk_full_is_a_clear_error_and_resumes(tmp_path: Path) -> None:
    """A real write beyond RLIMIT_FSIZE (EFBIG, like a full disk) in the CLI child process."""
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    index_dir = tmp_path / "idx"
    cmd = [sys.executable, "-m", "indexer", "sync", str(src), "--index", str(index_dir),
           "--model", "fake:384"]
    env = {**os.environ, "INDEXER_CHUNK_ROWS": "2048"}  # one chunk: 2048 x 384 x 4 = 3 MiB
    # The manifest and metadata stay far under 1 MiB; the 3 MiB chunk does not fit.
    failed = subprocess.run(cmd, env=env, capture_output=True, text=True,
                            preexec_fn=_limit_file_size(2**20), timeout=120)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert failed.stderr.startswith("indexer: error: cannot write chunk 0")
    assert failed.stderr.count("\n") == 1 and "sync again" in failed.stderr
    with indexer.open(index_dir) as idx:
        st = idx.status()
        assert st["done"] == 0 and st["pending"] == len(DOCS) and st["active_claims"] == 0
        assert idx.manifest.integrity_check() == "ok" and idx.verify().ok

    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    with indexer.open(index_dir) as idx:
        assert idx.verify().ok and idx.status()["done"] == len(DOCS)
        ids, vecs = idx.vectors()
        for doc_id, row in zip(ids, np.asarray(vecs), strict=True):
            np.testing.assert_array_equal(row, fake_vector(DOCS[doc_id], 384))
