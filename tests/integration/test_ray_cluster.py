"""The Ray backend on a real multi-node Ray cluster on this machine (`ray.cluster_utils.Cluster`: a head
node and a second node, one CPU each, each its own raylet): actors are placed on both nodes, and the
cluster loses a node mid-sync (removed: its raylet and workers die) or has its actor hang (SIGSTOP).
The sync finishes, each text is embedded in exactly one successful claim (the lost node's claims in
flight are redone), the vectors equal the inline backend's and `verify` is clean.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

from indexer import Index, SyncOptions, sync  # noqa: E402
from indexer.runners import BatchDone, EmbedResult, make_runner  # noqa: E402
from indexer.runners._liveness import HangRule  # noqa: E402
from indexer.runners.ray_actors import RayRunner  # noqa: E402
from indexer.settings import Settings  # noqa: E402

from helpers import assert_same_vectors  # noqa: E402

MODEL = "fake:16"
CHUNK = 2048
DOCS = [{"id": f"c{i}", "text": f"cluster document {i}"} for i in range(12 * CHUNK)]
SETTINGS = Settings(chunk_rows=CHUNK)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    if ray.is_initialized():
        ray.shutdown()
    c = cluster_utils.Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture
def second_node(cluster: Any) -> Iterator[Any]:
    """A second node with one CPU, removed at the end if the test has not removed it."""
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node)


@pytest.fixture(scope="module")
def inline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("inline") / "idx"
    sync(out, DOCS, SyncOptions(model=MODEL, settings=SETTINGS))
    return out


class Delivered:
    """A Runner around a RayRunner counting the texts of each successful claim; `action()` runs when the
    `at`-th claim is submitted, before it is (the driver waits for it: the fault happens while the
    claims before are in flight or just done, never after the sync)."""

    def __init__(self, inner: RayRunner, at: int = 0, action: Any = None) -> None:
        self.inner, self.info, self.at, self.action = inner, inner.info, at, action
        self.delivered: Counter[str] = Counter()
        self.submitted = 0
        self.nodes_at_close: list[tuple[str, str]] = []

    @property
    def capacity(self) -> int:
        return self.inner.capacity

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        self.submitted += 1
        if self.submitted == self.at and self.action is not None:
            self.action()
        future = self.inner.submit(texts, on_batch)
        future.add_done_callback(lambda f: f.exception() is None and self.delivered.update(texts))
        return future

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def watch_for_hangs(self, rule: HangRule) -> None:
        self.inner.watch_for_hangs(rule)

    def close(self) -> None:
        self.nodes_at_close = [(s.state, s.node) for s in self.inner.slots]
        self.inner.close()


def two_actors_on_two_nodes(second_node: Any) -> RayRunner:
    runner = make_runner("ray", MODEL, batch_size=32, workers=2)
    assert isinstance(runner, RayRunner)
    nodes = {s.node for s in runner.slots}
    assert nodes == {ray.get_runtime_context().get_node_id(), second_node.node_id}, nodes  # one on each
    return runner


def check(index_dir: Path, inline: Path, runner: Delivered) -> None:
    assert set(runner.delivered) == {d["text"] for d in DOCS} and max(runner.delivered.values()) == 1
    assert_same_vectors(index_dir, inline)
    with Index.open(index_dir) as idx:
        assert idx.verify().ok
        st = idx.status()
    assert st["done"] == len(DOCS) and st["pending"] == 0


def test_a_node_removed_mid_sync(tmp_path: Path, cluster: Any, second_node: Any, inline: Path) -> None:
    runner = Delivered(two_actors_on_two_nodes(second_node), at=3,
                       action=lambda: cluster.remove_node(second_node))
    summary = sync(tmp_path / "idx", DOCS, SyncOptions(settings=SETTINGS), runner=runner)

    assert second_node not in cluster.worker_nodes
    assert summary.workers_lost == 1 and summary.failed == 0 and summary.embedded == len(DOCS)
    assert any("was lost" in w for w in summary.warnings), summary.warnings
    # the claims in flight on the lost node were redone: at most two more claims than the chunks
    lost_claims = sum("was lost" in w for w in summary.warnings)
    assert 1 <= lost_claims <= 2 and summary.claims == len(DOCS) // CHUNK
    check(tmp_path / "idx", inline, runner)


def test_an_actor_that_hangs_on_the_second_node(tmp_path: Path, cluster: Any, second_node: Any,
                                                inline: Path) -> None:
    inner = two_actors_on_two_nodes(second_node)
    victim = next(s for s in inner.slots if s.node == second_node.node_id)
    runner = Delivered(inner, at=3, action=lambda: os.kill(victim.pid, signal.SIGSTOP))
    summary = sync(tmp_path / "idx", DOCS, SyncOptions(settings=Settings(chunk_rows=CHUNK, hang_seconds=2.0)),
                   runner=runner)

    assert summary.workers_hung == 1 and summary.workers_lost == 1, summary.warnings
    assert any("finished no batch" in w for w in summary.warnings), summary.warnings
    assert summary.embedded == len(DOCS) and summary.failed == 0
    check(tmp_path / "idx", inline, runner)
