"""A sync collects garbage less often while it runs (indexer/_gc.py), and leaves the collector as it
found it: after the sync, after an error, and when syncs overlap in threads."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import indexer
from indexer._gc import YOUNG_THRESHOLD, fewer_collections
from indexer.embedders.fake import FakeEmbedder


@pytest.fixture(autouse=True)
def default_collector() -> Iterator[None]:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


def test_the_block_slows_the_collector_and_restores_it() -> None:
    with fewer_collections():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_block_restores_the_collector() -> None:
    with pytest.raises(RuntimeError), fewer_collections():
        raise RuntimeError("stop")
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_overlapping_blocks_restore_the_collector_when_the_last_ends() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: list[tuple[int, int, int]] = []

    def second() -> None:
        first_in.wait()
        with fewer_collections():
            second_in.set()
            first_out.wait()
            seen.append(gc.get_threshold())  # the first block ended: still slowed for this one

    thread = threading.Thread(target=second)
    thread.start()
    with fewer_collections():
        first_in.set()
        second_in.wait()
    first_out.set()
    thread.join()
    assert seen == [(YOUNG_THRESHOLD, 10, 10)]
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


def test_a_sync_slows_the_collector_while_it_runs_and_restores_it(tmp_path: Path) -> None:
    seen: list[tuple[int, int, int]] = []
    docs = [(f"d{i}", f"text {i}") for i in range(50)]
    indexer.sync(tmp_path / "index", docs, embedder=FakeEmbedder(8),
                 on_progress=lambda _: seen.append(gc.get_threshold()))
    assert seen and all(t == (YOUNG_THRESHOLD, 10, 10) for t in seen)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
