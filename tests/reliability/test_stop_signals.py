"""SIGTERM and SIGHUP stop a sync like Ctrl-C (issue 14): the real CLI in a subprocess, the signal sent to
the driver alone (as `kill`, Slurm, systemd and Kubernetes send it), at the scan and at the embed phase;
claims are released, the run is recorded `interrupted`, the exit status is 128 + the signal, the message
says how to resume, the workers are gone, and the next sync embeds exactly the rest. Also as PID 1 of a
PID namespace (a container without an init), where a signal with no handler installed is dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from indexer import Index, sync
from indexer.manifest import Inspection
from indexer.settings import Settings

from helpers import ROOT

MODEL = "fake:16"


def query(index_dir: Path, question: Callable[[Inspection], int]) -> int:
    try:
        with Inspection.open(index_dir) as look:
            return question(look)
    except sqlite3.OperationalError:  # not created yet
        return 0


def held(look: Inspection) -> int:
    """Staged texts held by a claim."""
    return sum(1 for s in look.staged() if (s.claim_id or 0) > 0)


def done(look: Inspection) -> int:
    return look.contents_by_state()["done"]


def committed(index_dir: Path) -> int:
    return query(index_dir, lambda look: sum(1 for c in look.claims().values() if c.state == "committed"))


def last_run_state(index_dir: Path) -> str:
    with Inspection.open(index_dir) as look:
        return look.runs()[-1].state


def write_docs(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(n)))
    return path


def alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen[str], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def start_sync(args: list[str], env: dict[str, str], prefix: list[str] | None = None,
               stdin: int | None = None) -> subprocess.Popen[str]:
    command = [*(prefix or []), sys.executable, "-m", "indexer", "sync", *args, "--model", MODEL, "--quiet"]
    # SIGHUP as a terminal leaves it: a test run under nohup would hand its SIGHUP ignored on to the
    # sync, which keeps it ignored, as it should under nohup.
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdin=stdin,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))


def assert_stopped_cleanly(proc: subprocess.Popen[str], sig: signal.Signals, index_dir: Path) -> str:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, (proc.returncode, err)
    assert f"interrupted by {sig.name}" in err and "Run the same command to resume" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert query(index_dir, held) == 0  # none held by a claim
    assert query(index_dir, Inspection.active_claims) == 0
    assert last_run_state(index_dir) == "interrupted"
    return err


def resume_embeds_exactly_the_rest(src: Path, index_dir: Path, n: int) -> None:
    done_before = query(index_dir, done)
    again = sync(index_dir, paths=[str(src)], settings=Settings(chunk_rows=64))
    assert again.embedded == n - done_before and again.failed == 0
    with Index.open(index_dir) as idx:
        assert idx.verify().ok
        st = idx.status()
    assert st["done"] == st["documents"] == n and st["pending"] == 0


N = 20_000


def stop_mid_embed(tmp_path: Path, args: list[str], sig: signal.Signals, prefix: list[str] | None = None,
                   watch: Callable[[psutil.Process], list[int]] = lambda p: [],
                   timeout: float = 60) -> tuple[Path, Path, list[int]]:
    """Sync N documents with the CLI; once a claim is committed, send `sig` to the sync (the process
    itself, not its group, as `kill` does) and check it stopped cleanly. Returns the source, the index
    and the pids `watch(sync process)` found just before the signal."""
    src = write_docs(tmp_path / "docs.jsonl", N)
    index_dir = tmp_path / "idx"
    proc = start_sync([str(src), "--index", str(index_dir), *args], {"INDEXER_CHUNK_ROWS": "64"}, prefix)
    try:
        assert wait_until(lambda: committed(index_dir) > 0, proc, timeout), proc.communicate()
        driver = psutil.Process(proc.pid)
        if prefix:  # `unshare` forks the sync: its child is PID 1 inside the namespace
            (driver,) = driver.children()
        pids = watch(driver)
        driver.send_signal(sig)
        assert_stopped_cleanly(proc, sig, index_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return src, index_dir, pids


def wait_gone(pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout  # stopped and joined, or torn down by Ray: give it a moment
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pids)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_at_the_embed_phase_releases_claims_stops_workers_and_resumes(
        tmp_path: Path, sig: signal.Signals) -> None:
    def workers(driver: psutil.Process) -> list[int]:
        found = [c.pid for c in driver.children() if "resource_tracker" not in " ".join(c.cmdline())]
        assert len(found) == 2
        return found

    src, index_dir, pids = stop_mid_embed(tmp_path, ["--backend", "processes", "--workers", "2"], sig,
                                          watch=workers)
    wait_gone(pids, 10)
    assert 0 < query(index_dir, done) < N
    resume_embeds_exactly_the_rest(src, index_dir, N)


def test_sigterm_at_the_scan_phase_records_the_run_and_resumes(tmp_path: Path) -> None:
    """The source is stdin, fed halfway and left open: the sync is surely scanning when SIGTERM comes."""
    n = 3000
    src = write_docs(tmp_path / "docs.jsonl", n)
    lines = src.read_text().splitlines(keepends=True)
    index_dir = tmp_path / "idx"
    proc = start_sync(["-", "--index", str(index_dir)], {"INDEXER_SCAN_BATCH": "100"}, stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write("".join(lines[:1000]))
        proc.stdin.flush()
        assert wait_until(lambda: query(index_dir, lambda look: len(look.documents())) >= 500, proc), \
            proc.communicate()
        proc.send_signal(signal.SIGTERM)
        assert_stopped_cleanly(proc, signal.SIGTERM, index_dir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert query(index_dir, done) == 0  # stopped before embed
    resume_embeds_exactly_the_rest(src, index_dir, n)


def _pid_namespaces() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-Urpf", "--mount-proc", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _pid_namespaces(), reason="no `unshare` with user and PID namespaces here")
def test_sigterm_to_a_sync_running_as_pid_1(tmp_path: Path) -> None:
    """In a container without an init, the sync is PID 1: the kernel drops a SIGTERM that has no handler
    installed, so the sync used to run on. It installs its handler explicitly."""
    src, index_dir, _ = stop_mid_embed(tmp_path, [], signal.SIGTERM,
                                       prefix=["unshare", "-Urpf", "--mount-proc"])
    resume_embeds_exactly_the_rest(src, index_dir, N)


def test_sigterm_with_the_ray_backend_leaves_no_actor_behind(tmp_path: Path) -> None:
    pytest.importorskip("ray")

    def actors(driver: psutil.Process) -> list[int]:
        found = [p.pid for p in driver.children(recursive=True) if p.name().startswith("ray::")]
        assert found, "no Ray actor process found"
        return found

    src, index_dir, pids = stop_mid_embed(tmp_path, ["--backend", "ray", "--workers", "2"], signal.SIGTERM,
                                          watch=actors, timeout=120)
    wait_gone(pids, 30)
    resume_embeds_exactly_the_rest(src, index_dir, N)


def test_a_stop_signal_within_held_stop_is_raised_as_the_block_ends() -> None:
    """A SIGTERM that comes inside `held_stop` (around zarr's calls, which a StopSignal must not cut in
    two) lets the block finish, then stops as any other: real signals, sent to this process."""
    from indexer._signals import held_stop, stop_signals
    from indexer.errors import StopSignal

    steps: list[str] = []
    # stop_signals() installs its handler only over the default one, which an earlier test in this
    # process may have replaced (ray.init installs its own): the default first, put back after.
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with stop_signals(), pytest.raises(StopSignal):
            with held_stop():
                with held_stop():  # nested: the outermost block raises it
                    os.kill(os.getpid(), signal.SIGTERM)
                    time.sleep(0.05)  # the handler has run by now
                    steps.append("inner done")
                steps.append("outer done")
            steps.append("after the block")
        assert steps == ["inner done", "outer done"]
        with stop_signals(), pytest.raises(StopSignal):  # outside a held block: raised at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
            steps.append("not reached")
        assert steps == ["inner done", "outer done"]
    finally:
        if previous is not None:  # (None: a handler not installed from Python, left as it was)
            signal.signal(signal.SIGTERM, previous)
