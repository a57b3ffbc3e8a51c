"""The Ray backend (runners/ray_actors.py) against a real local Ray instance, not a mock.

Ray starts once for the module (2 CPUs); the runners made here join it and leave it running. The CLI
test runs `indexer sync --backend ray` in a subprocess, where the runner starts and stops its own Ray.

TestRayRunner holds the Ray runner to the contract every backend keeps (tests/runner_contract.py); the
tests after it are Ray's own: an actor killed for good, options Ray refuses, the command line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from indexer import Index, IndexerError, SyncOptions, sync  # noqa: E402
from indexer.runners import Runner, make_runner  # noqa: E402
from indexer.runners.ray_actors import INSTALL_HINT, RayRunner  # noqa: E402
from indexer.settings import Settings  # noqa: E402

from helpers import ROOT, Throttle, assert_same_vectors, corpus, write_jsonl  # noqa: E402
from runner_contract import (  # noqa: E402
    Lacks,
    RunnerContract,
    Watched,
    WorkerState,
    big_corpus,
    check_consistent,
)

MODEL = "fake:16"

# Three claims of BIG_CHUNK texts, each long enough for the actors' progress polls (about every second)
# to see it at work: the kill tests' corpus.
BIG_CHUNK = 8192
BIG, BIG_SETTINGS = big_corpus(BIG_CHUNK)


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[Any]:
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def big_inline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inline backend's index of BIG: what every Ray run of it must equal, bit for bit."""
    out = tmp_path_factory.mktemp("inline") / "idx"
    sync(out, BIG, SyncOptions(model=MODEL, settings=BIG_SETTINGS))
    return out


def ray_workers(runner: Runner) -> list[WorkerState]:
    assert isinstance(runner, RayRunner)
    return [WorkerState(s.pid, s.state, s.deaths, s.busy > 0) for s in runner.slots]


# -- the contract: what every backend promises (tests/runner_contract.py) -----------------------------------

class TestRayRunner(RunnerContract):
    backend = "ray"
    capacity = 4  # two claims an actor
    load_error_match = r"fake:0.*could not be loaded in Ray worker 0"
    big_chunk = BIG_CHUNK
    progress_texts = BIG_CHUNK
    death_warning = "was lost"
    hang_seconds = 2.0
    fatal_loss_error = r"all 1 Ray workers were lost and could not be restarted"
    workers_exit_within = 10.0  # ray.kill returns before the actor's process has exited
    reports_worker_memory = Lacks("an actor's peak memory is read by the progress poll, which a claim "
                                  "shorter than a poll's interval never sees")
    reports_every_text = Lacks("progress is polled about every second: the batches an actor finishes "
                               "after the claim's last poll are not reported")

    def worker_states(self, runner: Runner) -> list[WorkerState]:
        return ray_workers(runner)

    def runner_that_cannot_recover(self) -> Runner:
        """Restarts are counted per actor: the one actor, with none allowed, is all there was."""
        return self.make(workers=1, max_restarts=0)

    @contextlib.contextmanager
    def progress_visible(self, runner: Runner) -> Iterator[None]:
        """The actor stopped 0.3 s of every 0.31 s: its claim lasts several of the driver's polls."""
        throttle = Throttle(self.worker_states(runner)[0].pid, stopped=0.3, running=0.01)
        throttle.start()
        try:
            yield
        finally:
            throttle.done.set()
            throttle.join()

    @pytest.fixture(scope="class")
    def big_reference(self, big_inline: Path) -> Path:
        return big_inline  # the same corpus: made once for the module

    def test_a_model_that_cannot_load_is_refused(self) -> None:
        super().test_a_model_that_cannot_load_is_refused()
        assert ray.is_initialized()  # the module's Ray was joined, not shut down


# -- workers lost for good -----------------------------------------------------------------------------

def test_actor_killed_for_good_the_others_go_on(tmp_path: Path, big_inline: Path) -> None:
    runner = make_runner("ray", MODEL, batch_size=32, workers=2)
    assert isinstance(runner, RayRunner)

    def kill_for_good(index: int, worker: WorkerState) -> None:
        ray.kill(runner.slots[index].handle, no_restart=True)
        os.kill(worker.pid, signal.SIGCONT)  # a stopped process cannot take Ray's kill

    watched = Watched(runner, lambda: ray_workers(runner), strike=kill_for_good)
    summary = sync(tmp_path / "idx", BIG, SyncOptions(settings=BIG_SETTINGS), runner=watched)

    assert len(watched.victims) == 1 and summary.workers_lost >= 1
    assert [w.state for w in watched.at_close].count("dead") == 1
    assert watched.capacity == 2  # two claims for the one actor left
    assert summary.embedded == len(BIG) and summary.claims == 3
    assert_same_vectors(tmp_path / "idx", big_inline)
    check_consistent(tmp_path / "idx")


# -- refusals ------------------------------------------------------------------------------------------

def test_bad_options_are_refused_without_hanging() -> None:
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
