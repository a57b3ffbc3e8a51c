"""Progress within a claim (issue 15): every backend reports each finished batch through `on_batch`, and
the driver's ETA comes from characters, not documents. Real runners: the inline runner with the tiny
random BERT (tests/tiny_model.py), real spawned process workers, the openai runner against the real
loopback server (tests/openai_server.py). Ray's polling is tested in test_runners_ray.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from indexer._progress import Progress, ProgressMeter
from indexer.embedders import load_embedder
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Claim
from indexer.runners import make_runner
from indexer.runners.inline import InlineRunner, embed_texts

from openai_server import Behavior, EmbeddingServer
from tiny_model import build_tiny_model, tiny_texts


def test_inline_reports_each_forward_pass_and_gives_the_same_vectors(tmp_path: Path) -> None:
    embedder = load_embedder(str(build_tiny_model(tmp_path / "tiny")), batch_size=8)
    texts = tiny_texts(60)
    calls: list[int] = []
    vectors, failures = InlineRunner(embedder).submit(texts, calls.append).result()
    assert failures == {} and sum(calls) == 60 and len(calls) >= math.ceil(60 / 8) and max(calls) <= 8
    assert np.array_equal(vectors, embedder.embed(texts))  # a batch per call, the same numbers


def test_an_embedder_without_tokenizer_is_cut_by_batch_size() -> None:
    fake = FakeEmbedder(16)
    texts = [f"text {i}" for i in range(25)]
    calls: list[int] = []
    vectors, _ = embed_texts(fake, texts, calls.append, batch_size=10)
    assert calls == [10, 10, 5] and np.array_equal(vectors, fake.embed(texts))


def test_process_workers_send_a_message_per_batch() -> None:
    runner = make_runner("processes", "fake:16", batch_size=32, workers=1)
    try:
        calls: list[int] = []
        texts = [f"text {i}" for i in range(100)]
        vectors, _ = runner.submit(texts, calls.append).result(timeout=60)
        assert calls == [32, 32, 32, 4] and np.array_equal(vectors, FakeEmbedder(16).embed(texts))
    finally:
        runner.close()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-progress")
    with EmbeddingServer(Behavior(api_key="sk-test-progress")) as srv:
        yield srv


def test_openai_reports_each_request(server: EmbeddingServer) -> None:
    runner = make_runner("openai", "text-embedding-3-small", batch_size=32, base_url=server.base_url,
                         max_batch_inputs=16)
    try:
        calls: list[int] = []
        before = len(server.records())
        vectors, failures = runner.submit([f"text {i}" for i in range(50)], calls.append).result(timeout=60)
        assert failures == {} and vectors.shape[0] == 50
        assert sum(calls) == 50 and len(calls) == len(server.records()) - before >= 4  # 16 inputs a request
    finally:
        runner.close()


def test_eta_comes_from_characters_left_not_documents() -> None:
    """Claims go shortest texts first: after the two short texts of four, documents say half done,
    characters say 2 of 202."""
    seen: list[Progress] = []
    meter = ProgressMeter("embed", 4, seen.append, total_chars=202, interval=0.0)
    claim = Claim(1, "t", 0, [b"a", b"b"], ["a", "b"])
    meter.on_batch(claim)(2)  # a finished batch of the claim in flight, counted as its two shortest
    meter.tick()
    p = seen[-1]
    assert p.processed == 2 and p.eta_s is not None
    elapsed = p.processed / p.docs_per_s
    assert p.eta_s == pytest.approx(100 * elapsed, rel=1e-6)  # (202 - 2) chars left at 2 chars per elapsed
    meter.settle(claim)
    meter.add(2, chars=2)  # committed: the same count, now done
    assert seen[-1].processed == 2
