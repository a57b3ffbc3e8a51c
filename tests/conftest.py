"""Shared test setup: fixtures for every tier, and each test marked with its tier.

Sets HF_HUB_OFFLINE=1 and TRANSFORMERS_OFFLINE=1 at import, before any test module imports transformers:
no test may reach a model hub.

The tiers are folders: tests/unit (one part of the library on its own, fakes allowed), tests/integration
(the whole pipeline through real parts: the model, processes, Ray, an HTTP server, LanceDB, the CLI) and
tests/reliability (crashes, kills, faults, corruption, hostile input, concurrent processes). Each test
gets its tier's marker, so `pytest -m unit` runs the fast tier alone. Plain helpers (served, write_jsonl,
invoke, ...) are in tests/helpers.py.

Fixtures (all cheap; use them instead of building your own):

    write_jsonl     the function `write_jsonl(path, docs) -> path` (helpers.write_jsonl).
    small_settings  Settings(chunk_rows=8, scan_batch=16, retry_attempts=3): small chunks, so that a few
                    dozen documents make several claims, chunks and scan batches.
    fake_embedder   a FakeEmbedder(16): deterministic unit vectors seeded by the text's hash, no model.
                    Pass it as `indexer.sync(..., embedder=fake_embedder)`; its model name is "fake:16".
    fake_vector     the function `fake_vector(text, dim=16) -> np.ndarray`: the fake model's vector.
    server          a running tests/openai_server.py EmbeddingServer (Behavior(api_key=API_KEY)), with
                    OPENAI_API_KEY set to API_KEY and OPENAI_BASE_URL unset; turn its `behavior` knobs.
    no_network      every socket connection in this process fails (OSError); the list of addresses
                    tried, for asserting that nothing (or only what is unavoidable) was tried.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from indexer.embedders.fake import FakeEmbedder
from indexer.settings import Settings

from helpers import FAKE_DIM, Docs, fake_vector, write_jsonl

if TYPE_CHECKING:
    from openai_server import EmbeddingServer

TIERS = ("unit", "integration", "reliability")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(tier)


@pytest.fixture(name="write_jsonl")
def write_jsonl_fixture() -> Callable[[Path, Docs], Path]:
    return write_jsonl


@pytest.fixture(name="fake_vector")
def fake_vector_fixture() -> Callable[..., np.ndarray]:
    return fake_vector


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


@pytest.fixture
def small_settings() -> Settings:
    return Settings(chunk_rows=8, scan_batch=16, retry_attempts=3)


@pytest.fixture
def fake_embedder() -> FakeEmbedder:
    return FakeEmbedder(FAKE_DIM)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddingServer]:
    from openai_server import API_KEY, Behavior, EmbeddingServer  # aiohttp: only where it is used

    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with EmbeddingServer(Behavior(api_key=API_KEY)) as srv:
        yield srv
