"""The in-process runner: the driver embeds each claim itself, one at a time."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

import numpy as np

from ..embedders import Embedder, TokenizingEmbedder
from . import BatchDone, EmbedResult
from ._liveness import HangRule


def embed_texts(embedder: Embedder, texts: list[str], on_batch: BatchDone | None = None,
                batch_size: int | None = None) -> EmbedResult:
    """Vectors for `texts` and the failures by position. A batch that raises is retried text by text,
    so one bad document fails alone; the driver also fails any non-finite vector, never stores it.

    `on_batch(n)` is called as batches finish: per forward pass where the embedder tokenizes apart
    (its `embed` is exactly tokenize + embed_tokenized), else per slice of `batch_size` texts (the
    embedder's own `batch_size` if not given; one call for the whole claim without either)."""
    try:
        return np.asarray(_embed_batches(embedder, texts, on_batch, batch_size), dtype=np.float32), {}
    except Exception:
        return embed_text_by_text(embedder, texts, on_batch)


def _embed_batches(embedder: Embedder, texts: list[str], on_batch: BatchDone | None,
                   batch_size: int | None) -> Any:
    if on_batch is None:
        return embedder.embed(texts)
    if isinstance(embedder, TokenizingEmbedder):
        return embedder.embed_tokenized(embedder.tokenize(texts), on_batch=on_batch)
    size = batch_size or getattr(embedder, "batch_size", None) or max(1, len(texts))
    parts = []
    for start in range(0, len(texts), size):
        parts.append(np.asarray(embedder.embed(texts[start:start + size]), dtype=np.float32))
        on_batch(len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, embedder.info.dim), np.float32)


def embed_text_by_text(embedder: Embedder, texts: list[str],
                       on_batch: BatchDone | None = None) -> EmbedResult:
    """One call per text, so that a text that fails fails alone, with its reason."""
    failures: dict[int, str] = {}
    vectors = np.full((len(texts), embedder.info.dim), np.nan, dtype=np.float32)
    for i, text in enumerate(texts):
        try:
            vectors[i] = embedder.embed([text])[0]
        except Exception as exc:  # the document's own failure, recorded with its reason
            failures[i] = f"embedding failed: {type(exc).__name__}: {exc}"
        if on_batch is not None:
            on_batch(1)
    return vectors, failures


class InlineRunner:
    capacity = 1

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.info = embedder.info

    def submit(self, texts: list[str], on_batch: BatchDone | None = None) -> Future[EmbedResult]:
        future: Future[EmbedResult] = Future()
        try:
            future.set_result(embed_texts(self.embedder, texts, on_batch))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def watch_for_hangs(self, rule: HangRule) -> None:
        """Nothing to watch: a claim that hangs here hangs the driver itself."""

    def stats(self) -> dict[str, object]:
        return {}

    def close(self) -> None:
        pass


def make(model: str, batch_size: int, embedder_options: dict[str, object], **options: object) -> InlineRunner:
    from ..embedders import load_embedder

    if options:
        from ..errors import IndexerError

        raise IndexerError(f"backend inline takes no worker options (got {', '.join(sorted(options))})")
    return InlineRunner(load_embedder(model, batch_size=batch_size, **embedder_options))  # type: ignore[arg-type]
