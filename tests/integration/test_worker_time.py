"""How the process pool's workers spend their time (issue 11: workers must not be starved): the busy,
idle and starved seconds per worker that ProcessRunner.stats() reports and a sync puts in
`backend_stats` and `--json`.

Real spawned worker processes with the fake model (`fake:16`). No assertion on speed: the waits that
must (or must not) be counted are made by the test itself with sleeps, and give lower bounds; wall
times measured around the runner give upper bounds. One bound is on a share: a worker with its next
claim at hand is starved for less than 2% of its time (measured ten times lower, also beside two busy
loops on 2 cores). There the worker is slowed down deliberately, so that a claim outlasts its trip
through the pipe, by a batch size of one text (one forward call and one progress message per text).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.cli import cli
from indexer.runners import WorkerLost, make_runner
from indexer.runners.processes import ProcessRunner

MODEL = "fake:16"
MS = 1e-3  # stats() rounds seconds to milliseconds (a sum of two, to within one)
KEYS = ("busy_seconds_per_worker", "idle_seconds_per_worker", "starved_seconds_per_worker")


def pool(workers: int, batch_size: int = 32, claims_per_worker: int = 1) -> ProcessRunner:
    runner = make_runner("processes", MODEL, batch_size=batch_size, workers=workers,
                         claims_per_worker=claims_per_worker)
    assert isinstance(runner, ProcessRunner)
    runner.wait_ready()
    return runner


def texts(n: int, tag: str) -> list[str]:
    return [f"{tag} text number {i}" for i in range(n)]


def per_worker(stats: dict[str, object]) -> list[tuple[float, float, float]]:
    """(busy, idle, starved) of each worker, checked for shape and sign."""
    lists = [stats[k] for k in KEYS]
    assert all(isinstance(v, list) and len(v) == stats["workers"] for v in lists), stats
    rows = list(zip(*lists, strict=True))
    for busy, idle, starved in rows:
        assert busy >= 0 and idle >= 0 and 0 <= starved <= idle + MS, stats
    return rows


def test_a_wait_for_work_counts_as_starved_the_end_as_idle_and_the_load_not_at_all() -> None:
    """Two workers: before their first claims (model load, a pause) nothing is counted. Then, while
    the driver still has work to hand out (a pause, then one more claim), a worker without a claim is
    starved, whether the claim comes to it or to the other one; after the last claim, up to close(),
    it is idle only."""
    runner = pool(2)
    try:
        time.sleep(0.3)  # loaded, no claim yet: not counted
        start = time.monotonic()
        for future in [runner.submit(texts(200, f"first {w}")) for w in range(2)]:  # one each
            future.result(timeout=60)
        time.sleep(0.4)  # both wait for work that comes: starved
        runner.submit(texts(200, "last")).result(timeout=60)
        time.sleep(0.3)  # no more work: idle, not starved
    finally:
        runner.close()
    wall = time.monotonic() - start
    stats = runner.stats()
    rows = per_worker(stats)
    for busy, idle, starved in rows:
        assert busy > 0
        assert starved >= 0.4 - MS and idle >= starved + 0.3 - MS, stats
        # From its first claim (after `start`) to the close (before `wall` was read), nothing more.
        assert busy + idle <= wall + MS, (stats, wall)
    total = sum(busy + idle for busy, idle, _ in rows)
    # (the shares are rounded to 4 decimals)
    assert stats["idle_share"] == pytest.approx(sum(idle for _, idle, _ in rows) / total, abs=5e-5)
    assert stats["starved_share"] == pytest.approx(sum(s for _, _, s in rows) / total, abs=5e-5)
    # Read after the close, the figures stand still.
    assert runner.stats()["busy_seconds_per_worker"] == stats["busy_seconds_per_worker"]
    assert runner.stats()["idle_seconds_per_worker"] == stats["idle_seconds_per_worker"]


@pytest.mark.parametrize("claims_per_worker", [1, 2])
def test_a_slow_worker_with_work_queued_is_starved_only_for_the_round_trip(claims_per_worker: int) -> None:
    """Two workers slowed down to one text per forward call, all work submitted at once. With two
    claims a worker, each has its next claim at hand when it finishes one, so it waits for none
    (starved ~ 0); its only idle time is the tail, after its last claim. With one (the default), each
    waits for the round trip of every next claim through the runner: starved, though not for long."""
    runner = pool(2, batch_size=1, claims_per_worker=claims_per_worker)
    try:
        start = time.monotonic()
        futures = [runner.submit(texts(2000, f"claim {c}")) for c in range(16)]
        for future in futures:
            future.result(timeout=120)
    finally:
        runner.close()
    wall = time.monotonic() - start
    stats = runner.stats()
    rows = per_worker(stats)
    assert all(busy > 0 for busy, _, _ in rows), stats  # both worked
    assert all(busy + idle <= wall + MS for busy, idle, _ in rows), (stats, wall)
    assert isinstance(stats["starved_share"], float)
    if claims_per_worker == 2:
        assert stats["starved_share"] < 0.02, stats
    else:
        assert 0 < stats["starved_share"] < 0.3, stats
    # The tail: a worker idles at most about one claim's time after its last (8 claims each).
    assert isinstance(stats["idle_share"], float) and stats["idle_share"] < 0.3, stats


def test_unused_runner_reports_zero_time_and_no_share() -> None:
    runner = pool(2)
    runner.close()
    stats = runner.stats()
    assert per_worker(stats) == [(0.0, 0.0, 0.0)] * 2
    assert stats["idle_share"] is None and stats["starved_share"] is None


def test_sync_json_reports_the_workers_time(tmp_path: Path) -> None:
    """Through the CLI: `indexer sync --backend processes --json` carries each worker's busy, idle and
    starved seconds and the shares in backend_stats, within the sync's own time."""
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(3000)))
    result = CliRunner().invoke(cli, ["sync", str(src), "--index", str(tmp_path / "idx"), "--model", MODEL,
                                      "--backend", "processes", "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    stats = summary["backend_stats"]
    rows = per_worker(stats)
    assert sum(busy for busy, _, _ in rows) > 0, stats
    assert all(busy + idle <= summary["seconds"] + MS for busy, idle, _ in rows), summary
    assert 0 <= stats["starved_share"] <= stats["idle_share"] <= 1, stats
    assert summary["embedded"] == 3000


def test_a_killed_worker_counts_its_claim_as_busy_and_its_reload_not_at_all() -> None:
    """A death stops that worker's clock (its claim so far counts as busy) until its replacement has
    loaded the model."""
    runner = pool(1, batch_size=1)
    try:
        start = time.monotonic()
        first = runner.submit(texts(100_000, "long"))  # one text per call: it takes a while
        while not runner.busy_pids():
            time.sleep(0.01)
        time.sleep(0.3)  # it holds the claim: busy
        os.kill(runner.pids[0], signal.SIGKILL)
        with pytest.raises(WorkerLost, match="SIGKILL"):
            first.result(timeout=60)
        lost = time.monotonic()
        runner.wait_ready()
        reload = time.monotonic() - lost  # the replacement's start and model load: not counted
        runner.submit(texts(100, "after")).result(timeout=60)
    finally:
        runner.close()
    wall = time.monotonic() - start
    stats = runner.stats()
    ((busy, idle, _),) = per_worker(stats)
    assert stats["restarts"] == 1 and reload > 0.1
    assert busy >= 0.3 - MS, stats
    # (0.1 s for the test's own threads to wake up after the death and after the load)
    assert busy + idle <= wall - reload + 0.1, (stats, wall, reload)
