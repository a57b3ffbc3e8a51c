"""The in-process runner: the driver embeds each claim itself, one at a time."""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np

from ..embedders import Embedder
from . import EmbedResult


def embed_texts(embedder: Embedder, texts: list[str]) -> EmbedResult:
    """Vectors for `texts` and the failures by position. A batch that raises is retried text by text,
    so one bad document fails alone; the driver also fails any non-finite vector, never stores it."""
    try:
        return np.asarray(embedder.embed(texts), dtype=np.float32), {}
    except Exception:
        return embed_text_by_text(embedder, texts)


def embed_text_by_text(embedder: Embedder, texts: list[str]) -> EmbedResult:
    """One call per text, so that a text that fails fails alone, with its reason."""
    failures: dict[int, str] = {}
    vectors = np.full((len(texts), embedder.info.dim), np.nan, dtype=np.float32)
    for i, text in enumerate(texts):
        try:
            vectors[i] = embedder.embed([text])[0]
        except Exception as exc:  # the document's own failure, recorded with its reason
            failures[i] = f"embedding failed: {type(exc).__name__}: {exc}"
    return vectors, failures


class InlineRunner:
    capacity = 1

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.info = embedder.info

    def submit(self, texts: list[str]) -> Future[EmbedResult]:
        future: Future[EmbedResult] = Future()
        try:
            future.set_result(embed_texts(self.embedder, texts))
        except BaseException as exc:
            future.set_exception(exc)
        return future

    def close(self) -> None:
        pass


def make(model: str, batch_size: int, embedder_options: dict[str, object], **options: object) -> InlineRunner:
    from ..embedders import load_embedder

    if options:
        from ..errors import IndexerError

        raise IndexerError(f"backend inline takes no worker options (got {', '.join(sorted(options))})")
    return InlineRunner(load_embedder(model, batch_size=batch_size, **embedder_options))  # type: ignore[arg-type]
