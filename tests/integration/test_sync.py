"""The sync pipeline end to end with the fake model: incremental embedding, deletes, dry runs, failures,
configuration binding, and the maintenance commands (verify, verify --repair, compact).

`RecordingEmbedder` (tests/helpers.py) is a fake: the deterministic fake model, wrapped so that a test
can count which texts were embedded, make chosen texts raise or come back non-finite, and look at the
index from inside an embed call (to see what is served while a sync runs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import indexer
from indexer.cli import cli
from indexer.embedders.fake import FakeEmbedder
from indexer.errors import ConfigMismatchError
from indexer.manifest import Inspection, content_hash
from indexer.settings import Settings

from helpers import FAKE_DIM, RecordingEmbedder, assert_serves, docs_of, fake_vector, served, write_jsonl


def dump(ix: Path) -> str:
    with Inspection.open(ix) as look:
        return look.dump()


def chunk_files(ix: Path) -> dict[str, bytes]:
    return {str(p.relative_to(ix)): p.read_bytes() for p in sorted((ix / "vectors.zarr").rglob("*"))
            if p.is_file()}


@pytest.fixture
def ix(tmp_path: Path) -> Path:
    return tmp_path / "index"


# -- incremental embedding ------------------------------------------------------------------------

def test_unchanged_documents_are_never_reembedded(tmp_path: Path, ix: Path, small_settings: Settings) -> None:
    docs = docs_of(20)
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    emb = RecordingEmbedder()
    first = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                         embedder=emb)
    assert (first.scanned, first.new, first.embedded) == (20, 20, 20)
    assert emb.embedded == Counter(docs.values())
    assert_serves(ix, docs)

    again = RecordingEmbedder()
    second = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                          embedder=again)
    assert again.calls == []
    assert (second.unchanged, second.new, second.changed, second.embedded, second.would_embed) == \
        (20, 0, 0, 0, 0)

    docs["d003"] = "text number 3, edited"
    docs["d100"] = "a new document"
    write_jsonl(src, docs)
    third_emb = RecordingEmbedder()
    third = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                         embedder=third_emb)
    assert third_emb.embedded == Counter(["text number 3, edited", "a new document"])
    assert (third.new, third.changed, third.unchanged, third.embedded) == (1, 1, 19, 2)
    assert_serves(ix, docs)


def test_a_sync_with_nothing_to_embed_never_loads_the_model(tmp_path: Path, ix: Path,
                                                             small_settings: Settings) -> None:
    indexer.sync(ix, [("a", "alpha")], indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    # no embedder given: the model named in index.toml would be loaded only if there were work
    summary = indexer.sync(ix, [("a", "alpha")], indexer.SyncOptions(settings=small_settings))
    assert (summary.unchanged, summary.embedded, summary.claims) == (1, 0, 0)


def test_identical_texts_are_embedded_once_and_share_a_slot(ix: Path, small_settings: Settings) -> None:
    emb = RecordingEmbedder()
    docs = {"a": "same words", "b": "same words", "c": "same words", "d": "other words"}
    summary = indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert emb.embedded == Counter({"same words": 1, "other words": 1})
    assert summary.embedded == 2 and summary.would_embed == 2
    with indexer.open(ix) as idx:
        slots = Inspection(idx.manifest.conn).slots_of(list(docs))
        assert slots["a"] == slots["b"] == slots["c"] != slots["d"]
        vecs = idx.get(["a", "b", "c", "d"])
        assert idx.status()["done"] == 4
    np.testing.assert_array_equal(vecs[:3], np.stack([fake_vector("same words")] * 3))
    assert_serves(ix, docs)

    # a new id whose text is already embedded is served at once, with no model call
    later = RecordingEmbedder()
    docs["e"] = "other words"
    summary = indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=later)
    assert later.calls == [] and summary.new == 1 and summary.would_embed == 0
    assert_serves(ix, docs)


def test_changed_document_serves_its_old_vector_until_the_new_one_is_done(
        ix: Path, small_settings: Settings) -> None:
    indexer.sync(ix, {"a": "old text", "b": "bee"}.items(), indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    old, new = fake_vector("old text"), fake_vector("new text")
    seen_during: list[np.ndarray] = []

    def look(texts: list[str]) -> None:
        # a reader that opens the index while the new text is being embedded
        assert texts == ["new text"]
        with indexer.open(ix) as idx:
            seen_during.append(idx.get(["a"])[0].copy())
            assert idx.status()["pending"] == 1
            ids, vecs = idx.vectors()
            seen_during.append(np.asarray(vecs)[list(ids).index("a")])

    emb = RecordingEmbedder(during=look)
    summary = indexer.sync(ix, {"a": "new text", "b": "bee"}.items(),
                           indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert summary.changed == 1 and summary.embedded == 1
    assert len(seen_during) == 2
    for v in seen_during:
        np.testing.assert_array_equal(v, old)

    with indexer.open(ix) as idx:
        np.testing.assert_array_equal(idx.get(["a"])[0], new)
    got = served(ix)
    np.testing.assert_array_equal(got["a"], new)
    assert not any(np.array_equal(v, old) for v in got.values())  # the old vector is no longer served


# -- deletes, dry runs, skips ---------------------------------------------------------------------

def test_missing_documents_are_kept_unless_delete_missing(tmp_path: Path, ix: Path,
                                                          small_settings: Settings) -> None:
    docs = {"a": "alpha", "b": "beta", "c": "gamma"}
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))

    write_jsonl(src, {"a": "alpha", "b": "beta"})
    kept = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                        embedder=FakeEmbedder(FAKE_DIM))
    assert kept.deleted == 0
    assert_serves(ix, docs)  # "c" still served: missing docs are kept by default

    gone = indexer.sync(ix, paths=[str(src)],
                        options=indexer.SyncOptions(settings=small_settings, delete_missing=True),
                        embedder=FakeEmbedder(FAKE_DIM))
    assert gone.deleted == 1
    assert_serves(ix, {"a": "alpha", "b": "beta"})
    with indexer.open(ix) as idx:
        with pytest.raises(KeyError, match="'c'"):
            idx.get(["c"])
        status = idx.status()
        assert (status["documents"], status["deleted"], status["done"]) == (2, 1, 2)

    # it comes back: live again, and its vector was still there, so nothing is embedded
    write_jsonl(src, docs)
    emb = RecordingEmbedder()
    back = indexer.sync(ix, paths=[str(src)],
                        options=indexer.SyncOptions(settings=small_settings, delete_missing=True),
                        embedder=emb)
    assert emb.calls == [] and back.deleted == 0 and back.new == 1
    assert_serves(ix, docs)
    with indexer.open(ix) as idx:
        assert idx.status()["deleted"] == 0


def test_a_deleted_document_compacted_away_comes_back_embedded_again(ix: Path,
                                                                    small_settings: Settings) -> None:
    docs = {"a": "alpha", "b": "beta"}
    indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    indexer.sync(ix, [("a", "alpha")], indexer.SyncOptions(settings=small_settings, delete_missing=True),
                 embedder=FakeEmbedder(FAKE_DIM))
    with indexer.open(ix, small_settings) as idx:
        assert idx.compact().contents_dropped == 1
    emb = RecordingEmbedder()
    indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert emb.embedded == Counter(["beta"])
    assert_serves(ix, docs)


def test_dry_run_writes_nothing_and_reports(tmp_path: Path, ix: Path, small_settings: Settings) -> None:
    docs = {"a": "alpha", "b": "beta", "c": "gamma"}
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    before_dump, before_bytes = dump(ix), (ix / "manifest.sqlite").read_bytes()
    before_store = chunk_files(ix)
    with indexer.open(ix) as idx:
        before_status = idx.status()

    write_jsonl(src, {"a": "alpha", "b": "beta, edited", "d": "delta", "e": "delta"})
    emb = RecordingEmbedder()
    summary = indexer.sync(ix, paths=[str(src)],
                           options=indexer.SyncOptions(settings=small_settings, delete_missing=True,
                                                       dry_run=True),
                           embedder=emb)
    assert summary.dry_run
    assert (summary.would_embed, summary.deleted, summary.new, summary.changed, summary.unchanged) == \
        (2, 1, 2, 1, 1)
    assert summary.embedded == 0 and emb.calls == []
    assert dump(ix) == before_dump
    assert (ix / "manifest.sqlite").read_bytes() == before_bytes
    assert chunk_files(ix) == before_store
    with indexer.open(ix) as idx:
        after = idx.status()
    assert after == before_status  # the dry run did not even record a run
    assert_serves(ix, docs)


def test_dry_run_on_a_new_index_creates_nothing(tmp_path: Path, ix: Path, small_settings: Settings) -> None:
    emb = RecordingEmbedder()
    summary = indexer.sync(ix, docs_of(5).items(), indexer.SyncOptions(settings=small_settings, dry_run=True),
                           embedder=emb)
    assert (summary.would_embed, summary.new) == (5, 5)
    assert emb.calls == []
    assert not ix.exists()


def test_a_skipped_record_with_a_known_id_is_not_missing(tmp_path: Path, ix: Path,
                                                         small_settings: Settings) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", {"a": "alpha", "b": "beta", "c": "gamma"})
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    # b's text became unusable (empty), c is gone for real
    write_jsonl(src, [{"id": "a", "text": "alpha"}, {"id": "b", "text": "   "}, {"text": "no id at all"}])
    summary = indexer.sync(ix, paths=[str(src)],
                           options=indexer.SyncOptions(settings=small_settings, delete_missing=True),
                           embedder=FakeEmbedder(FAKE_DIM))
    assert summary.skipped == 2 and summary.deleted == 1
    assert any(":2" in w and "empty text" in w for w in summary.warnings)
    assert_serves(ix, {"a": "alpha", "b": "beta"})  # b keeps its last good vector


# -- failures -------------------------------------------------------------------------------------

def test_a_failing_document_fails_alone_with_its_reason(ix: Path, small_settings: Settings) -> None:
    docs = docs_of(10)
    docs["poison"] = "this text breaks the model"
    emb = RecordingEmbedder(fail=["this text breaks the model"])
    summary = indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert (summary.embedded, summary.failed) == (10, 1)
    # each attempt retries it alone after its batch raised (a batch of one, then one: at most twice)
    alone = [c for c in emb.calls if c == ["this text breaks the model"]]
    assert small_settings.retry_attempts <= len(alone) <= 2 * small_settings.retry_attempts

    good = {k: v for k, v in docs.items() if k != "poison"}
    assert_serves(ix, good)
    with indexer.open(ix, small_settings) as idx:
        with pytest.raises(KeyError, match="poison"):
            idx.get(["poison"])
        status = idx.status()
        assert (status["done"], status["failed"], status["pending"]) == (10, 1, 0)
        [(doc, reason)] = idx.failures()
        assert doc == "poison" and "ValueError" in reason and "cannot embed" in reason
        poison = Inspection(idx.manifest.conn).contents()[content_hash(docs["poison"])]
        assert (poison.state, poison.attempts, poison.slot) == ("failed", small_settings.retry_attempts, None)
        assert idx.verify().ok

    # a later sync does not try it again on its own ...
    emb2 = RecordingEmbedder(fail=["this text breaks the model"])
    indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=emb2)
    assert emb2.calls == []
    # ... `retry` re-queues it, and a sync with a model that copes embeds it
    with indexer.open(ix, small_settings) as idx:
        assert idx.retry() == 1
        assert (idx.status()["failed"], idx.status()["pending"]) == (0, 1)
    healed = RecordingEmbedder()
    summary = indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=healed)
    assert healed.embedded == Counter([docs["poison"]]) and summary.embedded == 1
    assert_serves(ix, docs)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_a_non_finite_vector_is_a_failure_and_never_stored(ix: Path, small_settings: Settings,
                                                          bad_value: float) -> None:
    docs = docs_of(5)
    docs["weird"] = "the model returns garbage for this"
    emb = RecordingEmbedder(nonfinite={docs["weird"]: bad_value})
    summary = indexer.sync(ix, docs.items(), indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert (summary.embedded, summary.failed) == (5, 1)
    assert emb.embedded[docs["weird"]] == small_settings.retry_attempts
    assert_serves(ix, {k: v for k, v in docs.items() if k != "weird"})
    with indexer.open(ix, small_settings) as idx:
        with pytest.raises(KeyError, match="weird"):
            idx.get(["weird"])
        [(doc, reason)] = idx.failures()
        assert doc == "weird" and "non-finite" in reason
        assert idx.verify().ok
        # no chunk holds the bad value anywhere
        for c in idx.store.chunk_files():
            assert not np.isinf(idx.store.read_chunk(c)).any()


# -- configuration binding ------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "field"), [({"model": "fake:32"}, "model"),
                                                 ({"dtype": "float16"}, "dtype")])
def test_another_model_or_dtype_is_refused_and_changes_nothing(
        tmp_path: Path, ix: Path, small_settings: Settings, kwargs: dict[str, str], field: str) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", docs_of(4))
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(model="fake:16", settings=small_settings))
    before, before_store = dump(ix), chunk_files(ix)
    before_toml = (ix / "index.toml").read_text()
    write_jsonl(src, docs_of(9))
    with pytest.raises(ConfigMismatchError, match=f"{field}: index has") as err:
        indexer.sync(ix, paths=[str(src)],
                     options=indexer.SyncOptions(settings=small_settings, **kwargs))  # type: ignore[arg-type]
    assert "nothing was changed" in str(err.value)
    assert dump(ix) == before
    assert chunk_files(ix) == before_store
    assert (ix / "index.toml").read_text() == before_toml


def test_an_embedder_of_another_model_name_is_refused(ix: Path, small_settings: Settings) -> None:
    indexer.sync(ix, [("a", "alpha")], indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    before = dump(ix)
    with pytest.raises(ConfigMismatchError, match=r"model: index has 'fake:16'.*'fake:8'"):
        indexer.sync(ix, [("a", "alpha"), ("b", "beta")], indexer.SyncOptions(settings=small_settings),
                     embedder=FakeEmbedder(8))
    assert dump(ix) == before


@pytest.mark.parametrize(("change", "field"), [({"dim": 8}, "dim"), ({"revision": "other"}, "revision"),
                                                ({"normalize": False}, "normalize"),
                                                ({"max_seq_length": 7}, "max_seq_length")])
def test_an_embedder_with_another_configuration_is_refused_before_any_claim(
        ix: Path, small_settings: Settings, change: dict[str, Any], field: str) -> None:
    indexer.sync(ix, [("a", "alpha")], indexer.SyncOptions(settings=small_settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    before_store = chunk_files(ix)
    emb = RecordingEmbedder()
    emb.info = replace(emb.info, **change)  # same model name, other weights/shape
    with pytest.raises(ConfigMismatchError, match=f"{field}: index has"):
        indexer.sync(ix, [("a", "alpha"), ("b", "beta")], indexer.SyncOptions(settings=small_settings),
                     embedder=emb)
    assert emb.calls == []
    assert chunk_files(ix) == before_store
    with indexer.open(ix) as idx:
        claims = len(Inspection(idx.manifest.conn).claims())
        assert claims == 1  # only the first sync's
        assert idx.config.dim == FAKE_DIM and idx.config.revision == "fake-3"
    assert_serves(ix, {"a": "alpha"})


# -- verify and repair ----------------------------------------------------------------------------

def synced(tmp_path: Path, ix: Path, settings: Settings, n: int = 20) -> tuple[Path, dict[str, str]]:
    docs = docs_of(n)
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=settings),
                 embedder=FakeEmbedder(FAKE_DIM))
    return src, docs


def ids_in_chunk(ix: Path, chunk: int, rows: int) -> list[str]:
    with indexer.open(ix) as idx:
        return sorted(i for i, s in Inspection(idx.manifest.conn).served_slots() if s // rows == chunk)


def test_verify_is_clean_after_a_sync(tmp_path: Path, ix: Path, small_settings: Settings) -> None:
    synced(tmp_path, ix, small_settings)
    with indexer.open(ix) as idx:
        report = idx.verify()
    assert report.ok and report.problems == [] and report.notes == [] and report.checked == 20
    result = CliRunner().invoke(cli, ["verify", str(ix)])
    assert result.exit_code == 0, result.output


def damage_missing(ix: Path, chunk: int) -> None:
    (ix / "vectors.zarr" / "c" / str(chunk) / "0").unlink()


def damage_torn(ix: Path, chunk: int) -> None:
    with open(ix / "vectors.zarr" / "c" / str(chunk) / "0", "r+b") as f:
        f.truncate(100)


@pytest.mark.parametrize(("damage", "word"), [(damage_missing, "missing"), (damage_torn, "torn")])
def test_verify_finds_a_lost_chunk_and_repair_restores_it(
        tmp_path: Path, ix: Path, small_settings: Settings,
        damage: Callable[[Path, int], None], word: str) -> None:
    src, docs = synced(tmp_path, ix, small_settings)
    lost = ids_in_chunk(ix, 1, small_settings.chunk_rows)
    assert len(lost) == small_settings.chunk_rows
    damage(ix, 1)

    with indexer.open(ix) as idx:
        report = idx.verify()
    assert not report.ok
    assert report.problems == [f"chunk 1 is {word}: {small_settings.chunk_rows} done vector(s) lost"]
    result = CliRunner().invoke(cli, ["verify", str(ix)])
    assert result.exit_code == 1
    assert f"chunk 1 is {word}" in result.output

    with indexer.open(ix) as idx:
        report = idx.verify(repair=True)
        assert report.repaired == small_settings.chunk_rows
        with pytest.raises(KeyError):  # the lost vectors are no longer served
            idx.get(lost[:1])
        assert idx.status()["pending"] == len(lost)
        assert idx.verify().ok  # nothing done points at the lost chunk any more
    assert sorted(served(ix)) == sorted(set(docs) - set(lost))

    emb = RecordingEmbedder()
    summary = indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                           embedder=emb)
    assert emb.embedded == Counter(docs[i] for i in lost) and summary.embedded == len(lost)
    assert_serves(ix, docs)
    with indexer.open(ix, small_settings) as idx:
        assert idx.verify().ok
        idx.compact()
        assert idx.verify().ok and idx.verify().notes == []
    assert_serves(ix, docs)


def test_verify_finds_a_nan_in_a_done_slot_and_repair_restores_it(
        tmp_path: Path, ix: Path, small_settings: Settings) -> None:
    src, docs = synced(tmp_path, ix, small_settings)
    with indexer.open(ix) as idx:
        slot = Inspection(idx.manifest.conn).slots_of(["d005"])["d005"]
        rows, dim = idx.store.chunk_rows, idx.store.dim
        path = idx.store.chunk_path(slot // rows)
    m = np.memmap(path, dtype="<f4", mode="r+", shape=(rows, dim))
    m[slot % rows, 3] = np.nan
    m.flush()
    del m

    with indexer.open(ix) as idx:
        report = idx.verify()
        assert not report.ok and len(report.problems) == 1
        assert f"slot {slot}" in report.problems[0] and "not finite" in report.problems[0]
        assert idx.verify(repair=True).repaired == 1
        with pytest.raises(KeyError, match="d005"):
            idx.get(["d005"])
    emb = RecordingEmbedder()
    indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings), embedder=emb)
    assert emb.embedded == Counter([docs["d005"]])
    assert_serves(ix, docs)
    with indexer.open(ix) as idx:
        assert idx.verify().ok


# -- compact --------------------------------------------------------------------------------------

def test_compact_removes_orphan_chunks_and_partial_files(tmp_path: Path, ix: Path,
                                                        small_settings: Settings) -> None:
    _, docs = synced(tmp_path, ix, small_settings, n=10)
    with indexer.open(ix) as idx:
        before = sorted(idx.store.chunk_files())
        rows, dim = idx.store.chunk_rows, idx.store.dim
        # a chunk written by a worker that died before its commit, and two unfinished writes
        idx.store.ensure_chunks(41)
        idx.store.write_chunk(40, np.zeros((rows, dim), dtype=np.float32))
        (idx.store.chunk_path(0).parent / "0.12345.partial").write_bytes(b"half")
        (idx.store.chunk_path(41).parent).mkdir(parents=True)
        (idx.store.chunk_path(41).parent / "0.999.partial").write_bytes(b"half")
        report = idx.verify()
        assert report.ok and len(report.notes) == 2
    with indexer.open(ix, small_settings) as idx:
        result = idx.compact()
        assert result.orphan_chunks_removed >= 1 and result.partial_files_removed == 2
        assert sorted(idx.store.chunk_files()) == before
        assert idx.store.partial_files() == []
        report = idx.verify()
        assert report.ok and report.notes == []
    assert_serves(ix, docs)


def test_compact_packs_sparse_chunks_and_keeps_every_vector(tmp_path: Path, ix: Path,
                                                           small_settings: Settings) -> None:
    src, docs = synced(tmp_path, ix, small_settings, n=32)  # 4 full chunks
    # edit some, delete some: the old chunks get holes, the edits go to new chunks
    for i in range(0, 32, 3):
        docs[f"d{i:03d}"] += " (edited)"
    for i in range(1, 32, 4):
        del docs[f"d{i:03d}"]
    write_jsonl(src, docs)
    indexer.sync(ix, paths=[str(src)],
                 options=indexer.SyncOptions(settings=small_settings, delete_missing=True),
                 embedder=FakeEmbedder(FAKE_DIM))
    before = served(ix)
    ids = sorted(docs)
    with indexer.open(ix, small_settings) as idx:
        by_get = idx.get(ids)
        chunks_before = sorted(idx.store.chunk_files())
        report = idx.compact()
        assert report.contents_dropped > 0 and report.chunks_packed > 0
        assert report.chunks_written < report.chunks_packed
        chunks_after = sorted(idx.store.chunk_files())
        assert len(chunks_after) < len(chunks_before)
        # every live content fits in the fewest chunks now
        assert len(chunks_after) == -(-len(set(docs.values())) // small_settings.chunk_rows)
        np.testing.assert_array_equal(idx.get(ids), by_get)
        assert idx.verify().ok and idx.verify().notes == []
    after = served(ix)
    assert sorted(after) == sorted(before) == ids
    for doc_id in ids:
        np.testing.assert_array_equal(after[doc_id], before[doc_id], err_msg=doc_id)
    assert_serves(ix, docs)

    # a later sync has nothing to do, and a second compact nothing to pack
    emb = RecordingEmbedder()
    assert indexer.sync(ix, paths=[str(src)], options=indexer.SyncOptions(settings=small_settings),
                        embedder=emb).embedded == 0
    assert emb.calls == []
    with indexer.open(ix, small_settings) as idx:
        assert idx.compact().chunks_packed == 0
    assert_serves(ix, docs)


# -- the scan's read-ahead thread ------------------------------------------------------------------------

def test_read_ahead_hands_on_items_then_the_readers_error_in_order() -> None:
    from indexer._reading import read_ahead

    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise indexer.SourceError("broke off")

    got: list[int] = []
    with pytest.raises(indexer.SourceError, match="broke off"), read_ahead(items()) as it:
        got.extend(it)
    assert got == [1, 2]


def test_read_ahead_stays_bounded_and_stops_and_closes_the_source_when_the_caller_stops() -> None:
    import threading
    import time

    from indexer._reading import read_ahead

    produced: list[int] = []
    closed = threading.Event()

    def items() -> Iterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    with pytest.raises(KeyboardInterrupt), read_ahead(items(), depth=2) as it:
        for i in it:
            time.sleep(0.2)  # the reader runs ahead meanwhile, as far as the queue lets it
            assert len(produced) <= i + 1 + 2 + 1  # queue of 2, plus the one waiting to be put
            if i == 3:
                raise KeyboardInterrupt  # Ctrl-C in the caller's thread
    assert closed.wait(2), "the source was not closed"
    assert len(produced) <= 4 + 2 + 1
    assert not [t for t in threading.enumerate() if t.name == "indexer-scan-reader"]


def test_the_summary_tells_what_the_embed_phase_was_spent_on(tmp_path: Path) -> None:
    """`step_seconds`: the driver's wall seconds by step, within the embed phase; none without one."""
    docs = [{"id": k, "text": v} for k, v in docs_of(300).items()]
    first = indexer.sync(tmp_path / "idx", docs,
                         indexer.SyncOptions(model="fake:16", settings=indexer.Settings(chunk_rows=8)))
    assert set(first.step_seconds) == {"claim", "embed", "write", "commit"}
    assert all(seconds > 0 for seconds in first.step_seconds.values())
    assert sum(first.step_seconds.values()) <= first.embed_seconds
    again = indexer.sync(tmp_path / "idx", docs)
    assert again.embedded == 0 and again.step_seconds == {}
