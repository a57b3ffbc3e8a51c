"""An API outage is an outage, not bad documents (issue 10, items 8, 9 and 10).

Against the real loopback server (tests/openai_server.py) and the real `openai` client. A backend
answering 500, hanging, or asking to come back in 100,000 s used to end a small sync with exit 0, run
"finished", and after 3 runs every document permanently `failed`. Now: exit 4 with the backend's last
error, the run recorded as failed, no attempt used up, and the next sync after the outage embeds it all.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import CliRunner, Result

import indexer
from indexer import BackendUnavailableError, Settings
from indexer.cli import cli
from indexer.manifest import Inspection

from openai_server import API_KEY, EmbeddingServer, fake_vector

MODEL = "text-embedding-3-small"


def write_docs(path: Path, n: int, start: int = 0) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"id": f"d{i}", "text": f"document {i} text"}) + b"\n"
                              for i in range(start, start + n)))
    return path


def sync_cli(server: EmbeddingServer, src: Path, index: Path, *flags: str) -> Result:
    return CliRunner().invoke(cli, ["sync", str(src), "--index", str(index), "--backend", "openai",
                                    "--model", MODEL, "--base-url", server.base_url, *flags],
                              catch_exceptions=True)


def contents(index: Path) -> dict[str, int]:
    with Inspection.open(index) as look:
        rows = list(look.contents().values())
        last_run = look.runs()[-1].state
    out: dict[str, int] = dict(Counter(c.state for c in rows))
    out["max_attempts"] = max((c.attempts for c in rows), default=0)
    out["last_run_failed"] = int(last_run == "failed")
    return out


def assert_all_served(index: Path, n: int) -> None:
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        assert idx.verify().ok
    assert len(ids) == n
    expected = np.stack([fake_vector(f"document {i[1:]} text", 64) for i in ids])
    np.testing.assert_array_equal(np.asarray(vecs), expected)


def no_traceback(r: Result) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


@pytest.mark.parametrize("when", ["from the start", "after the probe"])
def test_outage_exits_4_three_times_and_uses_up_no_attempt(server: EmbeddingServer, tmp_path: Path,
                                                           when: str) -> None:
    index = tmp_path / "idx"
    r = sync_cli(server, write_docs(tmp_path / "a.jsonl", 10), index)
    assert r.exit_code == 0, r.output
    src = write_docs(tmp_path / "b.jsonl", 30)  # 20 new documents, a single request each run
    server.behavior.always_status = 500
    for _ in range(3):
        # "after the probe": the runner's start-up request passes, every request of the claims fails.
        server.behavior.healthy_first = len(server.records()) + (when == "after the probe")
        r = sync_cli(server, src, index, "--max-retries", "1")
        no_traceback(r)
        assert r.exit_code == 4, r.output
        assert "500 the server is unavailable" in r.stderr and "127.0.0.1" in r.stderr
        st = contents(index)
        assert (st.get("failed", 0), st["pending"], st["max_attempts"]) == (0, 20, 0)
        assert st["last_run_failed"]
    helptext = " ".join(CliRunner().invoke(cli, ["sync", "--help"]).output.split())
    assert "4 the backend is unavailable" in helptext
    server.behavior.always_status = None
    r = sync_cli(server, src, index)
    assert r.exit_code == 0, r.output
    assert_all_served(index, 30)


def test_hanging_server_exits_4_naming_the_timeout(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.hang_every, server.behavior.hang_s, server.behavior.healthy_first = 1, 2.0, 1
    docs = [{"id": f"d{i}", "text": f"document {i} text"} for i in range(20)]
    with pytest.raises(BackendUnavailableError, match=r"no answer within 0\.3s"):
        indexer.sync(tmp_path / "idx", docs, model=MODEL, backend="openai",
                     backend_options={"base_url": server.base_url, "timeout": 0.3, "max_retries": 0,
                                      "backoff_base": 0.01},
                     settings=Settings(chunk_rows=8))
    st = contents(tmp_path / "idx")
    assert (st.get("failed", 0), st["pending"], st["max_attempts"]) == (0, 20, 0)


def _sync_in_thread(index: Path, docs: list[dict[str, str]], **options: object) -> BaseException | None:
    """Runs the sync in a daemon thread: a regression that waits out a 100,000 s Retry-After fails the
    test after a minute instead of hanging it (and pytest's exit)."""
    got: list[BaseException | None] = []

    def go() -> None:
        try:
            indexer.sync(index, docs, model=MODEL, backend="openai", backend_options=options,
                         settings=Settings(chunk_rows=8))
            got.append(None)
        except BaseException as exc:
            got.append(exc)

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(60)
    assert got, "the sync still waits after 60 s: Retry-After was not capped"
    return got[0]


def test_retry_after_of_a_day_is_capped(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.always_status, b.always_retry_after, b.healthy_first = 503, 100_000, 1
    docs = [{"id": f"d{i}", "text": f"document {i} text"} for i in range(20)]
    exc = _sync_in_thread(tmp_path / "idx", docs, base_url=server.base_url, max_retries=1, backoff_max=0.2)
    assert isinstance(exc, BackendUnavailableError) and "503" in str(exc), exc
    st = contents(tmp_path / "idx")
    assert (st.get("failed", 0), st["pending"], st["max_attempts"]) == (0, 20, 0)
    gaps = [b.t - a.t_done for a, b in zip(server.records()[1:], server.records()[2:], strict=False)]
    assert gaps and max(gaps) < 30  # each wait capped (0.2 s asked; 30 s: room for a loaded machine)


def test_429_asking_for_a_day_gives_up_at_once(server: EmbeddingServer, tmp_path: Path) -> None:
    b = server.behavior
    b.always_status, b.always_retry_after = 429, 100_000
    src = write_docs(tmp_path / "a.jsonl", 5)
    env = {**os.environ, "OPENAI_API_KEY": API_KEY, "PYTHONPATH": os.pathsep.join(sys.path)}
    p = subprocess.run([sys.executable, "-m", "indexer", "sync", str(src), "--index", str(tmp_path / "idx"),
                        "--backend", "openai", "--model", MODEL, "--base-url", server.base_url],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 4, p.stderr
    assert "Retry-After 100000 s is beyond" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "idx").exists()  # the start-up probe failed: nothing was made
    assert len(server.records()) == 1  # asked once, not waited out


def test_max_retries_0_sends_each_request_once(server: EmbeddingServer, tmp_path: Path) -> None:
    server.behavior.always_status = 500
    r = sync_cli(server, write_docs(tmp_path / "a.jsonl", 5), tmp_path / "idx", "--max-retries", "0")
    no_traceback(r)
    assert r.exit_code == 4, r.output
    assert len(server.records()) == 1  # the probe, not retried (the default would send it 4 times)


def test_non_numeric_vector_element_is_a_bad_answer_not_a_traceback(server: EmbeddingServer,
                                                                    tmp_path: Path) -> None:
    server.behavior.text_element_every = 2  # every other answer: ["not a number", 0.1, ...]
    docs = [{"id": f"d{i}", "text": f"document {i} text"} for i in range(40)]
    summary = indexer.sync(tmp_path / "idx", docs, model=MODEL, backend="openai",
                           backend_options={"base_url": server.base_url, "backoff_base": 0.01,
                                            "max_retries": 5},
                           settings=Settings(chunk_rows=8))
    assert summary.embedded == 40 and summary.failed == 0
    assert summary.backend_stats["bad_answers"] == len(server.records("garbage:text")) > 0
    assert_all_served(tmp_path / "idx", 40)

    server.behavior.text_element_every = 1  # every answer: the server is broken
    r = sync_cli(server, write_docs(tmp_path / "b.jsonl", 5), tmp_path / "idx2")
    no_traceback(r)
    assert r.exit_code == 4 and "not a number" in r.stderr, r.output
    assert not (tmp_path / "idx2").exists()


def test_json_summary_counts_returned_documents(server: EmbeddingServer, tmp_path: Path) -> None:
    # One request of the claims fails for good (5xx x 2), the next succeeds: the documents come back
    # in the same run, and none failed.
    docs = [{"id": f"d{i}", "text": f"document {i} text"} for i in range(8)]
    server.behavior.fail_every, server.behavior.fail_codes = 2, (502,)
    summary = indexer.sync(tmp_path / "idx", docs, model=MODEL, backend="openai",
                           backend_options={"base_url": server.base_url, "backoff_base": 0.01,
                                            "max_retries": 0},
                           settings=Settings(chunk_rows=8))
    assert summary.failed == 0 and summary.embedded == 8 and summary.returned == 8
    assert json.loads(json.dumps(summary.to_dict()))["returned"] == 8
    assert_all_served(tmp_path / "idx", 8)


class _DownRunner:
    """A runner (a fake, unit test only) whose backend is down: every text comes back as a
    BackendFailure, as the openai runner reports a request that gave up. No runner of this project
    loops like this without stopping itself; the driver's own rule must stop it anyway."""

    def __init__(self) -> None:
        from indexer.embedders import ModelInfo

        self.info = ModelInfo(model="down", revision="down", dim=8, normalize=True, max_seq_length=0)
        self.capacity = 1
        self.calls = 0

    def submit(self, texts: list[str], on_batch: object = None
               ) -> concurrent.futures.Future[tuple[np.ndarray, dict[int, str]]]:
        from indexer.runners import BackendFailure

        self.calls += 1
        future: concurrent.futures.Future[tuple[np.ndarray, dict[int, str]]] = concurrent.futures.Future()
        reason = BackendFailure(f"connection refused (call {self.calls})")
        failures: dict[int, str] = dict.fromkeys(range(len(texts)), reason)
        future.set_result((np.full((len(texts), 8), np.nan, np.float32), failures))
        return future

    def watch_for_hangs(self, rule: object) -> None:
        pass

    def stats(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


def test_driver_stops_any_backend_that_keeps_returning_work(tmp_path: Path) -> None:
    runner = _DownRunner()
    docs = [{"id": f"d{i}", "text": f"document {i} text"} for i in range(20)]
    with pytest.raises(BackendUnavailableError, match=r"connection refused \(call 3\)"):
        indexer.sync(tmp_path / "idx", docs, runner=runner, settings=Settings(chunk_rows=8))
    assert runner.calls == 3
    st = contents(tmp_path / "idx")
    assert (st.get("failed", 0), st["pending"], st["max_attempts"]) == (0, 20, 0)
