"""--runtime onnx / onnx-int8 and --truncate-dim: equal vectors, measured quality, configuration binding.

Fast tests use the tiny random BERT (tests/tiny_model.py) and the fake model; tests marked `model` use
the real all-MiniLM-L6-v2 on real text (stdlib docstrings). Every test exports into a cache under
tmp_path (INDEXER_CACHE_DIR), never into the home directory; one cache is shared by the module so that
each model is exported once.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xxhash

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import indexer
from indexer import ConfigMismatchError, IndexerError, ModelLoadError
from indexer.config import EmbeddingConfig, read_config, write_config
from indexer.embedders import TruncatedEmbedder, load_embedder
from indexer.embedders import onnx_runtime as ox
from indexer.embedders.fake import FakeEmbedder
from indexer.embedders.sentence_transformers import SentenceTransformerEmbedder
from indexer.errors import MissingDependencyError
from indexer.runners import auto as auto_runner
from indexer.runners import make_runner
from indexer.settings import Settings

from helpers import cosines, invoke, served
from tiny_model import MAX_SEQ_LENGTH, build_tiny_model, tiny_texts


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def _cache_env(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny_torch(tiny_path: Path) -> SentenceTransformerEmbedder:
    e = load_embedder(str(tiny_path), batch_size=32)
    assert isinstance(e, SentenceTransformerEmbedder)
    return e


def write_docs(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": f"d{i:04d}", "text": t}) + "\n" for i, t in enumerate(texts)),
                    encoding="utf-8")
    return path


# -- configuration: old index.toml, fingerprint, mismatch messages ----------------------------------------

OLD_TOML = """# The embedding configuration this index is bound to. Do not edit.
[embedding]
model = "fake:16"
revision = "{revision}"
dim = 16
dtype = "float32"
normalize = true
max_seq_length = 0
prompt = ""
fingerprint = "{fingerprint}"
"""


def old_fingerprint(values: dict[str, object]) -> str:
    """The fingerprint as it was computed before runtime and truncate_dim existed."""
    return xxhash.xxh3_128_hexdigest(json.dumps(values, sort_keys=True).encode())


def test_an_index_toml_from_before_runtimes_reads_with_the_defaults(tmp_path: Path) -> None:
    values: dict[str, object] = {"model": "fake:16", "revision": FakeEmbedder(16).info.revision, "dim": 16,
                                 "dtype": "float32", "normalize": True, "max_seq_length": 0, "prompt": ""}
    path = tmp_path / "index.toml"
    toml = OLD_TOML.format(fingerprint=old_fingerprint(values), revision=values["revision"])
    path.write_text(toml, encoding="utf-8")
    config = read_config(path)
    assert (config.runtime, config.truncate_dim) == ("torch", 0)
    # the same configuration, and the same fingerprint, as before the new fields
    assert config.fingerprint() == old_fingerprint(values)
    assert config == EmbeddingConfig(**values)  # type: ignore[arg-type]
    assert config.fingerprint() != EmbeddingConfig(**values, runtime="onnx").fingerprint()  # type: ignore[arg-type]
    assert config.fingerprint() != EmbeddingConfig(**values, truncate_dim=8).fingerprint()  # type: ignore[arg-type]


def test_an_old_index_syncs_on_with_the_default_runtime(tmp_path: Path, write_jsonl: Any) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta"})
    indexer.sync(tmp_path / "ix", paths=[str(src)], model="fake:16")
    # make it look like an index written before this change: no runtime, no truncate_dim
    toml = tmp_path / "ix" / "index.toml"
    text = toml.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith(("runtime", "truncate_dim"))]
    toml.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert "runtime" not in toml.read_text(encoding="utf-8")
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha", "b": "beta", "c": "gamma"})
    s = indexer.sync(tmp_path / "ix", paths=[str(src)], runtime="torch")
    assert (s.new, s.embedded) == (1, 1)
    with pytest.raises(ConfigMismatchError,
                       match="runtime: index has 'torch', this sync asked for 'onnx-int8'"):
        indexer.sync(tmp_path / "ix", paths=[str(src)], runtime="onnx-int8")


def test_write_and_read_config_keep_runtime_and_truncation(tmp_path: Path) -> None:
    config = EmbeddingConfig(model="m", revision="r", dim=8, dtype="float16", normalize=True,
                             max_seq_length=128, runtime="onnx-int8", truncate_dim=8)
    write_config(tmp_path / "index.toml", config)
    data = tomllib.loads((tmp_path / "index.toml").read_text(encoding="utf-8"))["embedding"]
    assert (data["runtime"], data["truncate_dim"]) == ("onnx-int8", 8)
    assert read_config(tmp_path / "index.toml") == config


# -- --truncate-dim ------------------------------------------------------------------------------------

def test_truncate_dim_stores_the_renormalized_prefix(tmp_path: Path, fake_vector: Any,
                                                     small_settings: Settings) -> None:
    texts = {f"d{i}": f"text {i}" for i in range(20)}
    s = indexer.sync(tmp_path / "ix", texts.items(), model="fake:16", truncate_dim=5, settings=small_settings)
    assert s.embedded == 20 and s.claims >= 2
    with indexer.open(tmp_path / "ix") as idx:
        assert (idx.config.dim, idx.config.truncate_dim, idx.config.normalize) == (5, 5, True)
    got = served(tmp_path / "ix")
    for key, text in texts.items():
        full = fake_vector(text, 16).astype(np.float64)
        want = full[:5] / np.linalg.norm(full[:5])
        assert got[key].shape == (5,)
        assert np.allclose(got[key], want, atol=1e-6)
        assert abs(np.linalg.norm(got[key].astype(np.float64)) - 1) < 1e-6

    # an existing index keeps its truncation; another one is refused before anything changes
    more = {**texts, "new": "a new text"}
    assert indexer.sync(tmp_path / "ix", more.items(), settings=small_settings).embedded == 1
    with pytest.raises(ConfigMismatchError, match="truncate_dim: index has 5, this sync asked for 4"):
        indexer.sync(tmp_path / "ix", more.items(), truncate_dim=4, settings=small_settings)


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "fake:16", "--truncate-dim", "16"], "--truncate-dim 16: model 'fake:16' makes vectors of 16 "
                                                     "dims; give a dimension from 1 to 15"),
    (["--model", "fake:16", "--truncate-dim", "0"], "Invalid value for '--truncate-dim'"),
    (["--model", "fake:16", "--runtime", "onnx"], "the fake model has no onnx runtime"),
    (["--model", "fake:16", "--runtime", "tensorrt"], "Invalid value for '--runtime'"),
])
def test_bad_runtime_and_truncation_are_refused_in_one_line(tmp_path: Path, write_jsonl: Any,
                                                            args: list[str], message: str) -> None:
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), *args)
    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "ix" / "index.toml").exists()


def test_bad_values_through_the_api() -> None:
    with pytest.raises(IndexerError, match="runtime 'gpu' is not known"):
        indexer.sync("unused", [], runtime="gpu")
    with pytest.raises(IndexerError, match="--truncate-dim must be"):
        indexer.sync("unused", [], truncate_dim=0)
    with pytest.raises(ModelLoadError, match="from 1 to 15"):
        TruncatedEmbedder(FakeEmbedder(16), 20)
    with pytest.raises(IndexerError, match="give them to load_embedder"):  # not silently ignored
        indexer.sync("unused", [], embedder=FakeEmbedder(16), truncate_dim=8)


# -- the onnx runtimes on the tiny model: equal vectors, the cache, the CLI -------------------------------

@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_onnx_equals_torch_on_mixed_batches(tiny_path: Path, tiny_torch: SentenceTransformerEmbedder,
                                            batch_size: int) -> None:
    texts = tiny_texts(70, seed=3)
    assert tiny_torch.token_lengths(texts).max() == MAX_SEQ_LENGTH  # some are truncated
    onnx = load_embedder(str(tiny_path), runtime="onnx", batch_size=batch_size)
    assert onnx.info.runtime == "onnx"
    assert onnx.info == tiny_torch.info.__class__(**{**tiny_torch.info.__dict__, "runtime": "onnx"})
    sims = cosines(onnx.embed(texts), tiny_torch.embed(texts))
    assert sims.min() >= 0.9999, texts[int(sims.argmin())]


def test_the_export_is_cached_and_not_redone(tmp_path: Path, tiny_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))
    first = load_embedder(str(tiny_path), runtime="onnx-int8")
    assert isinstance(first, ox.OnnxEmbedder)
    fp32, int8 = (cache / first.info.revision / ox.EXPORT_FORMAT / name
                  for name in ("model-fp32.onnx", "model-int8.onnx"))
    assert first.path == int8 and fp32.is_file() and int8.is_file()
    assert not list(cache.rglob("*.partial.onnx"))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (fp32, int8)}

    def no_export(*args: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr(ox, "_export_fp32", no_export)
    monkeypatch.setattr(ox, "_quantize_int8", no_export)
    for runtime in ("onnx", "onnx-int8"):
        load_embedder(str(tiny_path), runtime=runtime)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (fp32, int8)} == before


def test_files_from_an_older_export_format_are_not_loaded(tmp_path: Path, tiny_path: Path,
                                                          tiny_torch: SentenceTransformerEmbedder,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache path carries EXPORT_FORMAT: a file left by an older export (the unversioned layout,
    directly under the weights hash) is never loaded, the model is exported again beside it."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))
    stale = cache / tiny_torch.info.revision
    stale.mkdir(parents=True)
    for name in ox.FILES.values():
        (stale / name).write_bytes(b"an old export: loading it would fail")
    e = load_embedder(str(tiny_path), runtime="onnx-int8")
    assert isinstance(e, ox.OnnxEmbedder)
    assert e.path == stale / ox.EXPORT_FORMAT / "model-int8.onnx"
    assert e.embed(["alpha"]).shape == (1, e.info.dim)


def test_the_fp32_graph_is_fused_and_int8_quantizes_the_ffn_up_projections(
        tmp_path: Path, tiny_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    monkeypatch.setenv("INDEXER_CACHE_DIR", str(tmp_path / "cache"))  # export here, with this model
    e = load_embedder(str(tiny_path), runtime="onnx-int8")
    assert isinstance(e, ox.OnnxEmbedder)
    # traced with eager attention (fusable), and the torch model given back its own afterwards
    assert e.model[0].auto_model.config._attn_implementation == "sdpa"
    fp32 = onnx.load(str(e.path.with_name("model-fp32.onnx"))).graph
    int8 = onnx.load(str(e.path)).graph
    ops = {n.op_type for n in fp32.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops, ops  # transformer optimizer applied
    assert "QAttention" not in {n.op_type for n in int8.node}
    kept = [n.name for n in int8.node if n.op_type == "MatMul"]
    assert len(kept) == 2 * 2 and not any("/intermediate/" in n for n in kept), kept  # 2 layers
    assert sum(n.op_type == "MatMulInteger" for n in int8.node) == 2


def test_a_fused_graph_that_differs_from_torch_falls_back_to_the_plain_one(
        tmp_path: Path, tiny_path: Path, tiny_torch: SentenceTransformerEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    cache = tmp_path / "cache"
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))
    check = ox._check_export

    def fail_fused(model: Any, path: Path, name: str) -> None:
        if ".fused." in path.name:
            raise ModelLoadError("the fused graph differs")
        check(model, path, name)

    monkeypatch.setattr(ox, "_check_export", fail_fused)
    e = load_embedder(str(tiny_path), runtime="onnx")
    assert isinstance(e, ox.OnnxEmbedder)
    assert "Attention" not in {n.op_type for n in onnx.load(str(e.path)).graph.node}
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == [".lock", "model-fp32.onnx"]
    texts = tiny_texts(20, seed=4)
    assert cosines(e.embed(texts), tiny_torch.embed(texts)).min() >= 0.9999


def test_a_failed_export_leaves_no_file_behind(tmp_path: Path, tiny_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))

    def bad_export(model: object, path: Path) -> None:
        path.write_bytes(b"half a model")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ox, "_export_fp32", bad_export)
    with pytest.raises(RuntimeError, match="disk full"):
        load_embedder(str(tiny_path), runtime="onnx")
    assert [p.name for p in cache.rglob("*") if p.is_file()] == [".lock"]


def test_an_export_that_differs_from_torch_is_refused(tmp_path: Path, tiny_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ox, "EXPORT_MIN_COSINE", 1.5)  # no export can pass: the check must refuse
    with pytest.raises(ModelLoadError, match="does not reproduce torch"):
        load_embedder(str(tiny_path), runtime="onnx")
    assert not list((tmp_path / "cache").rglob("*.onnx"))


def test_cli_binds_the_index_to_its_runtime(tmp_path: Path, tiny_path: Path, tiny_torch: Any) -> None:
    texts = tiny_texts(30, seed=5)
    src = write_docs(tmp_path / "a.jsonl", texts)
    ix = str(tmp_path / "ix")
    r = invoke("sync", str(src), "--index", ix, "--model", str(tiny_path), "--runtime", "onnx-int8",
               "--truncate-dim", "16")
    assert r.exit_code == 0, r.output
    with indexer.open(ix) as idx:
        assert (idx.config.runtime, idx.config.truncate_dim, idx.config.dim) == ("onnx-int8", 16, 16)
    status = invoke("status", ix)
    assert "runtime onnx-int8, truncated to 16 dims" in status.stdout

    before = served(Path(ix))
    src = write_docs(tmp_path / "a.jsonl", [*texts, "a new text"])
    r = invoke("sync", str(src), "--index", ix, "--runtime", "torch")
    assert r.exit_code == 3, r.output
    assert "runtime: index has 'onnx-int8', this sync asked for 'torch' (these runtimes give different " \
           "vectors; only torch and onnx give the same)" in r.stderr
    assert "nothing was changed" in r.stderr and "Traceback" not in r.stderr
    r = invoke("sync", str(src), "--index", ix, "--runtime", "onnx-int8", "--truncate-dim", "8")
    assert r.exit_code == 3 and "truncate_dim: index has 16, this sync asked for 8" in r.stderr
    after = served(Path(ix))  # refused before anything was written
    assert after.keys() == before.keys() and all((after[k] == v).all() for k, v in before.items())

    # without --runtime / --truncate-dim the index's own are used
    r = invoke("sync", str(src), "--index", ix, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["embedded"] == 1
    new = served(Path(ix))["d0030"]
    full = tiny_torch.embed(["a new text"])[0].astype(np.float64)
    assert cosines(new[None], (full[:16] / np.linalg.norm(full[:16]))[None])[0] > 0.99


def test_missing_onnxruntime_says_how_to_install_it(tmp_path: Path, tiny_path: Path, write_jsonl: Any,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` raises ImportError
    with pytest.raises(MissingDependencyError):
        ox.import_onnxruntime()
    src = write_jsonl(tmp_path / "a.jsonl", {"a": "alpha"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), "--model", str(tiny_path),
               "--runtime", "onnx")
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines() == [
        "indexer: error: the onnx runtimes need onnxruntime and onnx, which are not installed; "
        "pip install 'indexer[onnx]' (or use --runtime torch)"]


def test_processes_backend_runs_onnx_in_each_worker(tmp_path: Path, tiny_path: Path,
                                                    tiny_torch: SentenceTransformerEmbedder,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty cache: both workers load at once, so the export is raced (lock + temp file + rename).
    cache = tmp_path / "cache"
    monkeypatch.setenv("INDEXER_CACHE_DIR", str(cache))
    texts = tiny_texts(60, seed=9)
    s = indexer.sync(tmp_path / "ix", [(f"d{i:03d}", t) for i, t in enumerate(texts)], model=str(tiny_path),
                     runtime="onnx", backend="processes", backend_options={"workers": 2},
                     settings=Settings(chunk_rows=8), chunking=False)  # whole texts, as embed gives them
    assert (s.embedded, s.failed) == (60, 0)
    assert s.backend_stats["workers"] == 2
    with indexer.open(tmp_path / "ix") as idx:
        assert idx.config.runtime == "onnx"
    got = served(tmp_path / "ix")
    sims = cosines(np.stack([got[f"d{i:03d}"] for i in range(60)]), tiny_torch.embed(texts))
    assert sims.min() >= 0.9999
    files = sorted(p.name for p in cache.rglob("*") if p.is_file())
    assert files == [".lock", "model-fp32.onnx"]


def test_truncation_holds_on_the_workers_tokenized_path(tmp_path: Path, tiny_path: Path) -> None:
    """Process workers embed through tokenize + embed_tokenized, not embed: the prefix is cut there
    too, so a pool stores what the in-process backend stores."""
    docs = [(f"d{i:03d}", t) for i, t in enumerate(tiny_texts(40, seed=3))]
    settings = Settings(chunk_rows=8)
    pool = indexer.sync(tmp_path / "pool", docs, model=str(tiny_path), truncate_dim=16, settings=settings,
                        backend="processes", backend_options={"workers": 2}, chunking=False)
    indexer.sync(tmp_path / "inline", docs, model=str(tiny_path), truncate_dim=16, settings=settings,
                 chunking=False)
    assert (pool.embedded, pool.failed) == (40, 0)
    got, want = served(tmp_path / "pool"), served(tmp_path / "inline")
    assert all(got[k].shape == (16,) and np.allclose(got[k], want[k], atol=1e-6) for k in want)


def test_backends_that_cannot_run_onnx_say_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IndexerError, match="backend gpus runs torch on each device; --runtime onnx runs on "
                                           "the CPU"):
        make_runner("gpus", "m", batch_size=8, embedder_options={"runtime": "onnx"}, devices="cpu")
    with pytest.raises(IndexerError, match="backend openai embeds through the API; --runtime onnx-int8"):
        make_runner("openai", "m", batch_size=8, embedder_options={"runtime": "onnx-int8"})
    with pytest.raises(IndexerError, match=r"backend openai does not take --truncate-dim; .* --dimensions"):
        make_runner("openai", "m", batch_size=8, embedder_options={"truncate_dim": 8})
    monkeypatch.setattr(auto_runner, "_cuda_available", lambda: True)
    assert auto_runner.choose("all-MiniLM-L6-v2", {})[0] == "gpus"
    assert auto_runner.choose("all-MiniLM-L6-v2", {}, "onnx")[0] in ("inline", "processes")


# -- the real model on real text ------------------------------------------------------------------------

MODULES = ("json", "textwrap", "functools", "itertools", "shutil", "csv", "argparse", "collections",
           "pathlib", "subprocess", "logging", "threading", "socket", "datetime", "re", "os")


def real_corpus() -> list[str]:
    """About 400 paragraphs of stdlib docstrings (mixed lengths) and whole module docstrings, several
    far past the model's 256-token limit."""
    paragraphs: list[str] = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            doc = None if attr.startswith("_") else inspect.getdoc(getattr(module, attr))
            if doc:
                paragraphs += [p.strip() for p in doc.split("\n\n") if len(p.strip()) >= 20]
    whole = [d for d in (inspect.getdoc(importlib.import_module(m)) for m in ("json", "csv", "argparse",
                                                                              "logging")) if d]
    return list(dict.fromkeys(whole + list(dict.fromkeys(paragraphs))[::2]))[:400]


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    return real_corpus()


@pytest.fixture(scope="module")
def torch_real() -> SentenceTransformerEmbedder:
    e = load_embedder("all-MiniLM-L6-v2")
    assert isinstance(e, SentenceTransformerEmbedder)
    return e


@pytest.fixture(scope="module")
def torch_vectors(torch_real: SentenceTransformerEmbedder, real_texts: list[str]) -> np.ndarray:
    return torch_real.embed(real_texts)


@pytest.fixture(scope="module")
def onnx_real(torch_real: SentenceTransformerEmbedder, cache: Path) -> Iterator[ox.OnnxEmbedder]:
    yield ox.OnnxEmbedder("all-MiniLM-L6-v2", runtime="onnx", model=torch_real.model, cache=cache)


@pytest.mark.model
def test_the_real_corpus_is_mixed(torch_real: SentenceTransformerEmbedder, real_texts: list[str]) -> None:
    lengths = torch_real.token_lengths(real_texts)
    assert len(real_texts) == 400
    assert lengths.min() <= 12 and (lengths == 256).sum() >= 4


@pytest.mark.model
@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_real_model_onnx_fp32_equals_torch(onnx_real: ox.OnnxEmbedder, torch_vectors: np.ndarray,
                                           real_texts: list[str], batch_size: int) -> None:
    # batches of 1 and 3 on a slice with the longest texts (cheaper); 32 on the whole corpus
    n = len(real_texts) if batch_size == 32 else 80
    onnx_real.batch_size = batch_size
    sims = cosines(onnx_real.embed(real_texts[:n]), torch_vectors[:n])
    assert sims.min() >= 0.9999, real_texts[int(sims.argmin())][:200]


def top10(vectors: np.ndarray, queries: int) -> np.ndarray:
    sims = vectors[:queries].astype(np.float64) @ vectors.astype(np.float64).T
    sims[np.arange(queries), np.arange(queries)] = -np.inf  # not itself
    return np.argsort(-sims, axis=1, kind="stable")[:, :10]


@pytest.mark.model
def test_real_model_int8_quality(torch_real: SentenceTransformerEmbedder, cache: Path,
                                 torch_vectors: np.ndarray, real_texts: list[str]) -> None:
    int8 = ox.OnnxEmbedder("all-MiniLM-L6-v2", runtime="onnx-int8", model=torch_real.model, cache=cache)
    got = int8.embed(real_texts)
    sims = cosines(got, torch_vectors)
    a, b = top10(got, 200), top10(torch_vectors, 200)
    overlap = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))
    print(f"int8 vs torch fp32: mean cosine {sims.mean():.5f}, min {sims.min():.5f}, "
          f"top-10 overlap of 200 queries {overlap:.3f}")
    # Measured on this corpus (AVX2 CPU, onnxruntime 1.32, export format v2: only the FFN
    # up-projections int8): mean 0.99775, min 0.99508, overlap 0.945 (v1, every weight MatMul int8:
    # 0.99253, 0.98659, 0.912). The floors sit a little under (int8 kernels differ between CPUs).
    assert sims.mean() >= 0.997
    assert sims.min() >= 0.99
    assert overlap >= 0.93


@pytest.mark.model
def test_real_model_truncation_is_the_renormalized_prefix(torch_real: SentenceTransformerEmbedder,
                                                          torch_vectors: np.ndarray,
                                                          real_texts: list[str]) -> None:
    truncated = TruncatedEmbedder(torch_real, 128)
    assert (truncated.info.dim, truncated.info.truncate_dim, truncated.info.runtime) == (128, 128, "torch")
    got = truncated.embed(real_texts[:50])
    full = torch_vectors[:50].astype(np.float64)
    want = full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True)
    assert got.shape == (50, 128)
    assert np.allclose(np.linalg.norm(got.astype(np.float64), axis=1), 1.0, atol=1e-6)
    assert np.abs(got - want).max() < 1e-5
