"""The Ray backend (runners/ray_actors.py) against a real local Ray instance, not a mock.

Ray starts once for the module (2 CPUs); the runners made here join it and leave it running. The CLI
test runs `indexer sync --backend ray` in a subprocess, where the runner starts and stops its own Ray.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from indexer import Index, IndexerError, SyncOptions, sync  # noqa: E402
from indexer.errors import ModelLoadError  # noqa: E402
from indexer.manifest import Inspection  # noqa: E402
from indexer.runners import BatchDone, EmbedResult, make_runner  # noqa: E402
from indexer.runners._liveness import HangRule  # noqa: E402
from indexer.runners.ray_actors import INSTALL_HINT, RayRunner  # noqa: E402
from indexer.settings import Settings  # noqa: E402

from helpers import ROOT, Throttle, assert_same_vectors, corpus, write_jsonl  # noqa: E402

MODEL = "fake:16"

# The kill tests strike while an actor holds a claim: Watched stops the actor's process, and kills it
# only if it still holds the claim a moment later (so a claim's speed does not matter).
BIG_CHUNK = 8192
BIG = [{"id": f"b{i}", "text": f"big document {i}"} for i in range(3 * BIG_CHUNK)]
BIG_SETTINGS = Settings(chunk_rows=BIG_CHUNK)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()


# -- helpers -------------------------------------------------------------------------------------------

def committed_claims(index_dir: Path) -> int:
    with Inspection.open(index_dir) as look:
        return sum(1 for c in look.claims().values() if c.state == "committed")


def check_consistent(index_dir: Path) -> dict[str, Any]:
    with Index.open(index_dir) as idx:
        report = idx.verify()
        assert report.ok, report.to_dict()
        return idx.status()


class Watched:
    """A Runner around a RayRunner that counts the texts each successful claim delivered, and may kill
    the first actor seen working (`how`: "signal" = SIGKILL of its process, Ray restarts it;
    "ray" = ray.kill without restart; "stop" = SIGSTOP of its process, a hang)."""

    def __init__(self, inner: RayRunner, kill: str | None = None) -> None:
        self.inner, self.kill = inner, kill
        self.info = inner.info
        self.delivered: Counter[str] = Counter()
        self.victims: list[int] = []
        self.at_close: list[tuple[str, int, int]] = []
        self._killer: threading.Thread | None = None

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        future = self.inner.submit(texts, on_batch)
        future.add_done_callback(lambda f: f.exception() is None and self.delivered.update(texts))
        if self.kill and self._killer is None:
            self._killer = threading.Thread(target=self._kill_when_busy, daemon=True)
            self._killer.start()
        return future

    def _kill_when_busy(self, timeout: float = 60.0) -> None:
        """Stop the first actor seen holding a claim; if it still holds it a moment later (what it sent
        before it stopped has arrived by then), it is mid-claim: kill it (or, for "stop", leave it
        stopped). Else let it go on and look again. No timing assumption about the model's speed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for slot in list(self.inner.slots):
                if not slot.busy or slot.state != "ready":
                    continue
                os.kill(slot.pid, signal.SIGSTOP)
                time.sleep(0.1)
                if not slot.busy:
                    os.kill(slot.pid, signal.SIGCONT)
                    continue
                self.victims.append(slot.index)
                if self.kill == "signal":
                    os.kill(slot.pid, signal.SIGKILL)
                elif self.kill == "ray":
                    ray.kill(slot.handle, no_restart=True)
                    os.kill(slot.pid, signal.SIGCONT)  # a stopped process cannot take Ray's kill
                return
            time.sleep(0.002)

    def close(self) -> None:
        if self.kill in ("signal", "stop") and self.victims:  # wait for Ray to bring the actor back
            slot = self.inner.slots[self.victims[0]]
            deadline = time.monotonic() + 60
            while slot.state == "restarting" and time.monotonic() < deadline:
                time.sleep(0.05)
        self.at_close = [(s.state, s.pid, s.deaths) for s in self.inner.slots]
        self.inner.close()

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def watch_for_hangs(self, rule: HangRule) -> None:
        self.inner.watch_for_hangs(rule)


def ray_runner(workers: int = 2, **options: Any) -> RayRunner:
    runner = make_runner("ray", MODEL, batch_size=32, workers=workers, **options)
    assert isinstance(runner, RayRunner)
    return runner


@pytest.fixture(scope="module")
def big_inline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inline backend's index of BIG: what every Ray run of it must equal, bit for bit."""
    out = tmp_path_factory.mktemp("inline") / "idx"
    sync(out, BIG, SyncOptions(model=MODEL, settings=BIG_SETTINGS))
    return out


# -- results -------------------------------------------------------------------------------------------

def test_same_vectors_as_inline_each_content_embedded_once(tmp_path: Path) -> None:
    docs = corpus(3000, distinct=1700)
    settings = Settings(chunk_rows=128)
    watched = Watched(ray_runner(2))
    assert watched.capacity == 4 and watched.info.model == MODEL
    summary = sync(tmp_path / "ray", docs, SyncOptions(settings=settings), runner=watched)
    inline = sync(tmp_path / "inline", docs, SyncOptions(model=MODEL, settings=settings))

    assert summary.embedded == inline.embedded == 1700
    assert summary.claims == math.ceil(1700 / 128) == committed_claims(tmp_path / "ray")
    assert summary.workers_lost == 0 and summary.fencing_refusals == 0 and summary.failed == 0
    # Every distinct text went out in exactly one successful claim.
    assert set(watched.delivered) == {d["text"] for d in docs}
    assert max(watched.delivered.values()) == 1
    assert_same_vectors(tmp_path / "ray", tmp_path / "inline")
    st = check_consistent(tmp_path / "ray")
    assert st["documents"] == st["done"] == 3000 and st["pending"] == 0


def test_resync_through_make_runner_embeds_only_changes(tmp_path: Path) -> None:
    docs = corpus(400, distinct=400)
    options: dict[str, object] = {"workers": 2}
    first = sync(tmp_path / "idx", docs,
                 SyncOptions(model=MODEL, backend="ray", backend_options=options,
                             settings=Settings(chunk_rows=64)))
    assert first.embedded == 400 and first.claims == 7
    docs[:10] = [{"id": d["id"], "text": d["text"] + " changed"} for d in docs[:10]]
    second = sync(tmp_path / "idx", docs,
                  SyncOptions(model=MODEL, backend="ray", backend_options=options,
                              settings=Settings(chunk_rows=64)))
    assert (second.changed, second.unchanged, second.embedded, second.claims) == (10, 390, 10, 1)
    third = sync(tmp_path / "idx", docs,
                 SyncOptions(backend="ray", backend_options=options))  # nothing to embed
    assert third.embedded == 0 and third.unchanged == 400
    sync(tmp_path / "inline", docs, SyncOptions(model=MODEL))
    assert_same_vectors(tmp_path / "idx", tmp_path / "inline")


def test_progress_within_a_claim_comes_from_polling_the_actor() -> None:
    """A throttled actor (stopped 0.3 s of every 0.31 s, batches of one text) takes seconds for one
    claim: the driver's polls see its batches, and report them through on_batch before the claim ends."""
    runner = make_runner("ray", MODEL, batch_size=1, workers=1)
    assert isinstance(runner, RayRunner)
    texts = [d["text"] for d in BIG[:BIG_CHUNK]]
    calls: list[int] = []
    throttle = Throttle(runner.slots[0].pid, stopped=0.3, running=0.01)
    try:
        throttle.start()
        vectors, failures = runner.submit(texts, calls.append).result(timeout=120)
    finally:
        throttle.done.set()
        throttle.join()
        runner.close()
    assert failures == {} and vectors.shape == (BIG_CHUNK, 16)
    assert len(calls) >= 2 and 0 < sum(calls) <= BIG_CHUNK, calls  # several reports, never too many


# -- workers lost --------------------------------------------------------------------------------------

def test_actor_process_killed_mid_claim_loses_nothing(tmp_path: Path, big_inline: Path) -> None:
    watched = Watched(ray_runner(2), kill="signal")
    summary = sync(tmp_path / "idx", BIG, SyncOptions(settings=BIG_SETTINGS), runner=watched)

    assert len(watched.victims) == 1, "no actor was seen working"
    assert summary.workers_lost >= 1
    assert any("was lost" in w and "back to pending" in w for w in summary.warnings), summary.warnings
    assert summary.embedded == len(BIG) and summary.failed == 0
    assert summary.claims == committed_claims(tmp_path / "idx") == 3
    # Ray restarted the killed actor: a new process that loaded the model again.
    victim = watched.victims[0]
    state, _pid, deaths = watched.at_close[victim]
    assert (state, deaths) == ("ready", 1)
    assert_same_vectors(tmp_path / "idx", big_inline)
    assert check_consistent(tmp_path / "idx")["done"] == len(BIG)


def test_a_sigstopped_actor_is_taken_for_hung_and_its_claims_redone(tmp_path: Path, big_inline: Path) -> None:
    """An actor stopped mid-claim answers neither its claim nor the progress poll: past the hang deadline
    (2 s here) it is killed, Ray restarts it, and its claims go back to pending and are embedded once."""
    watched = Watched(ray_runner(2), kill="stop")
    settings = Settings(chunk_rows=BIG_CHUNK, hang_seconds=2.0)
    summary = sync(tmp_path / "idx", BIG, SyncOptions(settings=settings), runner=watched)

    assert len(watched.victims) == 1, "no actor was seen working"
    assert summary.workers_hung == 1 and summary.workers_lost == 1 and summary.failed == 0
    assert summary.backend_stats["workers_hung"] == 1
    assert any("finished no batch" in w for w in summary.warnings), summary.warnings
    assert summary.embedded == len(BIG) and summary.claims == committed_claims(tmp_path / "idx") == 3
    assert set(watched.delivered) == {d["text"] for d in BIG} and max(watched.delivered.values()) == 1
    state, _pid, deaths = watched.at_close[watched.victims[0]]
    assert (state, deaths) == ("ready", 1)  # restarted by Ray, in a new process
    assert_same_vectors(tmp_path / "idx", big_inline)
    assert check_consistent(tmp_path / "idx")["done"] == len(BIG)


def test_actor_killed_for_good_the_others_go_on(tmp_path: Path, big_inline: Path) -> None:
    watched = Watched(ray_runner(2), kill="ray")
    summary = sync(tmp_path / "idx", BIG, SyncOptions(settings=BIG_SETTINGS), runner=watched)

    assert len(watched.victims) == 1 and summary.workers_lost >= 1
    assert [s[0] for s in watched.at_close].count("dead") == 1
    assert watched.capacity == 2  # two claims for the one actor left
    assert summary.embedded == len(BIG) and summary.claims == 3
    assert_same_vectors(tmp_path / "idx", big_inline)
    check_consistent(tmp_path / "idx")


def test_all_actors_lost_fails_fast_and_resumes(tmp_path: Path, big_inline: Path) -> None:
    watched = Watched(ray_runner(1, max_restarts=0), kill="signal")
    t = time.monotonic()
    with pytest.raises(IndexerError, match="Ray workers were lost"):
        sync(tmp_path / "idx", BIG, SyncOptions(settings=BIG_SETTINGS), runner=watched)
    assert time.monotonic() - t < 60 and watched.victims == [0]
    with Index.open(tmp_path / "idx", BIG_SETTINGS) as idx:
        assert idx.verify().ok
        st = idx.status()
    assert st["active_claims"] == 0 and st["contents"]["claimed"] == 0  # type: ignore[index]
    assert st["pending"] == len(BIG) - st["done"]  # type: ignore[operator]
    # The same sync, inline this time, finishes the job.
    rest = sync(tmp_path / "idx", BIG, SyncOptions(settings=BIG_SETTINGS))
    assert rest.embedded == len(BIG) - st["done"]  # type: ignore[operator]
    assert_same_vectors(tmp_path / "idx", big_inline)


# -- refusals ------------------------------------------------------------------------------------------

def test_bad_model_and_bad_options_are_refused_without_hanging() -> None:
    with pytest.raises(ModelLoadError, match=r"fake:0.*Ray worker 0"):
        make_runner("ray", "fake:0", batch_size=32, workers=1)
    with pytest.raises(IndexerError, match="--devices"):
        make_runner("ray", MODEL, batch_size=32, devices="0")
    with pytest.raises(IndexerError, match="no GPUs"):
        make_runner("ray", MODEL, batch_size=32, gpus_per_worker=1.0)
    with pytest.raises(IndexerError, match="at least 1"):
        make_runner("ray", MODEL, batch_size=32, workers=0)
    assert ray.is_initialized()  # the module's Ray was joined, not shut down


# -- the command line ----------------------------------------------------------------------------------

def test_cli_backend_ray_with_two_workers(tmp_path: Path) -> None:
    docs = corpus(600, distinct=500)
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    env = {**os.environ, "INDEXER_CHUNK_ROWS": "64"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, "-m", "indexer", "sync", str(src), "--index", str(tmp_path / "idx"),
                        "--model", MODEL, "--backend", "ray", "--workers", "2", "--json"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    summary = json.loads(r.stdout)
    assert summary["embedded"] == 500 and summary["claims"] == 8 and summary["workers_lost"] == 0
    sync(tmp_path / "inline", docs, SyncOptions(model=MODEL, settings=Settings(chunk_rows=64)))
    assert_same_vectors(tmp_path / "idx", tmp_path / "inline")


# An interpreter where `import ray` fails as it does when Ray is not installed: a finder first on
# sys.meta_path refuses ray and its submodules. Nothing of indexer is patched.
WITHOUT_RAY = """
import sys

class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoRay())
from indexer.cli import main
sys.argv[0] = "indexer"
main()
"""


def test_cli_without_ray_says_how_to_install_it(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", corpus(5, distinct=5))
    r = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "sync", str(src), "--index", str(tmp_path / "idx"),
                        "--model", MODEL, "--backend", "ray", "--workers", "2"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 1, r.stderr
    assert INSTALL_HINT in r.stderr and "pip install 'indexer[ray]'" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.startswith("indexer: error:")
    assert not Index.exists(tmp_path / "idx")
