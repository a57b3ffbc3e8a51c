"""`indexer push --to lancedb:PATH`: a real LanceDB directory kept equal to the index (ids and vectors;
at chunk level ids, chunk numbers, spans and vectors, as `Index.chunks()` gives them) through syncs of
new, changed and deleted documents, pushes that send only what changed, a Hypothesis sequence of both,
and pushes killed with SIGKILL part-way (indexer/_faults.py crash points), at both levels. Long
documents come from the fake model with --chunk-tokens 3 (it counts words): a paragraph of three
words is one chunk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import indexer
from indexer.push import push
from indexer.settings import Settings

from helpers import ROOT, invoke

lancedb = pytest.importorskip("lancedb")

SETTINGS = Settings(chunk_rows=8)


def table_rows(db: Path, table: str = "vectors") -> dict[str, bytes]:
    rows = lancedb.connect(str(db)).open_table(table).to_arrow()
    ids = rows.column("id").to_pylist()
    dim = rows.schema.field("vector").type.list_size
    vectors = rows.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    assert len(set(ids)) == len(ids), "a document is in the table twice"
    return {i: v.tobytes() for i, v in zip(ids, vectors, strict=True)}


def index_rows(ix: Path) -> dict[str, bytes]:
    with indexer.open(ix) as idx:
        ids, vecs = idx.vectors()
        return {i: v.tobytes() for i, v in zip(list(ids), np.asarray(vecs), strict=True)}


Chunk = tuple[int, int, bytes]  # start, end, vector bytes of one (id, chunk) row


def table_chunks(db: Path, table: str = "vectors") -> dict[tuple[str, int], Chunk]:
    rows = lancedb.connect(str(db)).open_table(table).to_arrow()
    assert rows.schema.names == ["id", "chunk", "start", "end", "vector"]
    dim = rows.schema.field("vector").type.list_size
    vectors = rows.column("vector").combine_chunks().values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    keys = list(zip(rows.column("id").to_pylist(), rows.column("chunk").to_pylist(), strict=True))
    assert len(set(keys)) == len(keys), "a chunk is in the table twice"
    spans = zip(rows.column("start").to_pylist(), rows.column("end").to_pylist(), strict=True)
    return {key: (a, b, v.tobytes()) for key, (a, b), v in zip(keys, spans, vectors, strict=True)}


def index_chunks(ix: Path) -> dict[tuple[str, int], Chunk]:
    with indexer.open(ix) as idx:
        c = idx.chunks()
        return {(i, int(k)): (int(a), int(b), v.tobytes()) for i, k, a, b, v in zip(
            c.ids, c.ordinals, c.starts, c.ends, np.asarray(c.vectors), strict=True)}


def table_level(db: Path, table: str = "vectors") -> str:
    return "chunks" if "chunk" in lancedb.connect(str(db)).open_table(table).schema.names else "documents"


def assert_mirrored(ix: Path, db: Path, table: str = "vectors", level: str | None = None) -> None:
    """The table equals the index at the level it holds (`level`, when given, must be that one)."""
    held = table_level(db, table)
    assert level in (None, held)
    expected: dict[Any, Any]
    got: dict[Any, Any]
    if held == "chunks":
        expected, got = index_chunks(ix), table_chunks(db, table)
    else:
        expected, got = index_rows(ix), table_rows(db, table)
    assert sorted(got) == sorted(expected)
    assert got == expected


def docs(n: int, version: int = 0) -> dict[str, str]:
    return {f"doc-{i:03d}": f"text {i} v{version}" for i in range(n)}


def paragraphs(name: str, n: int, version: int = 0) -> str:
    """A text of `n` three-word paragraphs: `n` chunks at --chunk-tokens 3."""
    return "\n\n".join(f"{name} v{version} p{k}." for k in range(n))


def sync(ix: Path, documents: dict[str, str], **kw: Any) -> indexer.SyncSummary:
    # An empty source cannot delete (it may be a cut stdin: issue 10, item 4); --delete-missing on it
    # is refused, so an empty step syncs without it and changes nothing. max_delete=1: these tests
    # delete whatever the source lost (the guard is tested in test_cli.py).
    return indexer.sync(ix, list(documents.items()),
                        indexer.SyncOptions(model="fake:16", delete_missing=bool(documents), max_delete=1.0,
                                            settings=SETTINGS, **kw))


def test_first_push_writes_everything_later_ones_only_the_changes(tmp_path: Path) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = docs(30)
    sync(ix, current)
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert (first["upserted"], first["deleted"], first["rows"], first["everything"]) == (30, 0, 30, True)
    assert isinstance(first["seconds"], float)
    assert_mirrored(ix, db)

    current["doc-007"] = "one change"
    sync(ix, current)
    second = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (second["upserted"], second["deleted"]) == (1, 0)  # exactly that change
    assert_mirrored(ix, db)

    del current["doc-003"]
    current["doc-100"] = "new"
    sync(ix, current)
    third = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (third["upserted"], third["deleted"], third["rows"]) == (1, 1, 30)
    assert_mirrored(ix, db)
    nothing = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (nothing["upserted"], nothing["deleted"]) == (0, 0)

    # a second table of the same database is a target of its own
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--table", "other", "--json")
    assert json.loads(r.stdout)["upserted"] == 30
    assert_mirrored(ix, db, "other")


def test_float16_index_and_awkward_ids(tmp_path: Path) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = {"it's": "quote", "back\\slash": "b", "東京": "tokyo", "a b,c": "spaces"}
    indexer.sync(ix, list(current.items()),
                 indexer.SyncOptions(model="fake:16", dtype="float16", settings=SETTINGS))
    push(ix, f"lancedb:{db}")
    assert_mirrored(ix, db)
    del current["it's"]
    sync(ix, current)
    report = push(ix, f"lancedb:{db}")
    assert (report.deleted, report.rows) == (1, 3)
    assert_mirrored(ix, db)
    current.update({"back\\slash": "changed", "東京": "changed too", "x'; DROP": "new"})
    sync(ix, current)  # replaces, whose predicates quote the ids
    report = push(ix, f"lancedb:{db}")
    assert (report.level, report.upserted, report.rows) == ("chunks", 3, 4)
    assert_mirrored(ix, db)


settings_for_sequences = settings(max_examples=6, deadline=None, derandomize=True,
                                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                         HealthCheck.too_slow])

# A step: ("sync", {id number: text version, absent: deleted}) or ("push", None).
step = st.one_of(
    st.tuples(st.just("sync"), st.dictionaries(st.integers(0, 11), st.integers(0, 2), max_size=12)),
    st.tuples(st.just("push"), st.none()))


def sequence_text(i: int, version: int) -> str:
    """Document i at a version: 1 to 4 chunks, the first shared by the even documents (one content,
    a row of each document in a table of chunks)."""
    text = paragraphs(f"d{i}", 1 + (i + version) % 4, version)
    return "shared common words.\n\n" + text if i % 2 == 0 else text


@pytest.mark.parametrize("level", ["chunks", "documents"])
@settings_for_sequences
@given(st.lists(step, min_size=1, max_size=6))
# Always tried: after a push d0 goes from 2 rows to 5, d2 from 4 to 2, d1 is deleted, then back in 3.
@example(steps=[("sync", {0: 0, 1: 0, 2: 0}), ("push", None), ("sync", {0: 3, 2: 2}), ("push", None),
                ("sync", {1: 1}), ("push", None)])
def test_any_sequence_of_syncs_and_pushes_ends_equal(tmp_path_factory: pytest.TempPathFactory, level: str,
                                                     steps: list[tuple[str, Any]]) -> None:
    """Documents change between 1 and 5 chunks, are deleted and come back; at chunk level the table
    holds exactly Index.chunks() after each push, at document level vectors() (long ones as means)."""
    base = tmp_path_factory.mktemp("seq")
    ix, db = base / "ix", base / "lance"
    sync(ix, {"seed": "seed"}, chunk_tokens=3)
    for kind, state in steps:
        if kind == "sync":
            sync(ix, {f"d{i}": sequence_text(i, v) for i, v in state.items()}, chunk_tokens=3)
        else:
            assert push(ix, f"lancedb:{db}", level=level, batch_rows=4).level == level
            assert_mirrored(ix, db, level=level)
    report = push(ix, f"lancedb:{db}", level=level, batch_rows=4)
    assert_mirrored(ix, db, level=level)
    assert report.rows == report.served_rows and not report.warnings
    assert report.served_rows == (len(index_chunks(ix)) if level == "chunks" else report.served)
    again = push(ix, f"lancedb:{db}", batch_rows=4)  # the table's level, without asking
    assert (again.level, again.upserted, again.upserted_rows, again.deleted) == (level, 0, 0, 0)


PUSH_CHILD = textwrap.dedent("""
    import sys
    from indexer.push import push
    push(sys.argv[1], sys.argv[2], level=sys.argv[3], batch_rows=3)
""")


def push_killed_at(ix: Path, db: Path, crash_at: str, level: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "INDEXER_CRASH_AT": crash_at}
    proc = subprocess.run([sys.executable, "-c", PUSH_CHILD, str(ix), f"lancedb:{db}", level], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]


def chunked_docs(n: int, version: int = 0) -> dict[str, str]:
    """n documents of 1 to 5 chunks; another version has other chunk counts (doc-000: 5, then 1)."""
    return {f"doc-{i:03d}": paragraphs(f"d{i}", 1 + (4 * (1 - version) + i) % 5, version) for i in range(n)}


@pytest.mark.parametrize("level", ["chunks", "documents"])
@pytest.mark.parametrize("crash_at", ["push-after-upsert:2", "push-after-delete:1"])
def test_a_push_killed_part_way_is_finished_by_the_next(tmp_path: Path, crash_at: str, level: str) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = chunked_docs(20)
    sync(ix, current, chunk_tokens=3)
    push(ix, f"lancedb:{db}", level=level)
    changed = {**{k: v for k, v in current.items() if k >= "doc-005"}, **chunked_docs(26, version=1)}
    del changed["doc-019"]
    sync(ix, changed, chunk_tokens=3)  # 5 deleted, 25 changed (most to another number of chunks) or new
    push_killed_at(ix, db, crash_at, level)
    with pytest.raises(AssertionError):  # the kill left the table part-way
        assert_mirrored(ix, db, level=level)

    # The hard case: documents the killed push may have sent are deleted before the next push.
    for doc_id in ("doc-000", "doc-006", "doc-007", "doc-020", "doc-021"):
        changed.pop(doc_id, None)
    sync(ix, changed, chunk_tokens=3)
    report = push(ix, f"lancedb:{db}")
    assert_mirrored(ix, db, level=level)
    assert report.rows == report.served_rows and report.served == len(changed)
    one = dict(changed, **{"doc-010": paragraphs("change", 4)})
    sync(ix, one, chunk_tokens=3)
    last = push(ix, f"lancedb:{db}")
    assert (last.upserted, last.upserted_rows, last.deleted) == (1, 4 if level == "chunks" else 1, 0)
    assert_mirrored(ix, db, level=level)


def test_a_table_this_index_never_pushed_is_not_overwritten_unless_replaced(tmp_path: Path) -> None:
    ix, other, db = tmp_path / "ix", tmp_path / "other", tmp_path / "lance"
    sync(ix, docs(5))
    sync(other, {"x": "something else"})
    push(other, f"lancedb:{db}")
    r = invoke("push", str(ix), "--to", f"lancedb:{db}")
    assert r.exit_code == 1 and "already holds 1 rows that this index never pushed" in r.stderr
    assert sorted(table_rows(db)) == ["x"]
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--replace", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["upserted"] == 5
    assert_mirrored(ix, db)


def test_a_dropped_table_is_pushed_again_whole(tmp_path: Path) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    sync(ix, docs(6))
    push(ix, f"lancedb:{db}")
    lancedb.connect(str(db)).drop_table("vectors")
    report = push(ix, f"lancedb:{db}")
    assert report.upserted == 6 and report.everything and "is gone" in report.warnings[0]
    assert_mirrored(ix, db)


def test_a_table_of_another_dimension_is_refused(tmp_path: Path) -> None:
    ix, other, db = tmp_path / "ix", tmp_path / "other", tmp_path / "lance"
    sync(ix, docs(3))
    indexer.sync(other, [("x", "y")], indexer.SyncOptions(model="fake:8", settings=SETTINGS))
    push(other, f"lancedb:{db}")
    with indexer.open(ix) as idx:
        idx.manifest.push_target(f"lancedb:{db}#vectors", create=True)  # as if it had pushed there
    r = invoke("push", str(ix), "--to", f"lancedb:{db}")
    assert r.exit_code == 1 and "does not fit this index" in r.stderr and "float>[8]" in r.stderr


def test_bad_targets_and_a_missing_lancedb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ix = tmp_path / "ix"
    sync(ix, docs(2))
    r = invoke("push", str(ix), "--to", "qdrant:localhost")
    assert r.exit_code == 1 and "SCHEME:LOCATION" in r.stderr
    r = invoke("push", str(ix), "--to", f"lancedb:{tmp_path}", "--table", "a;drop")
    assert r.exit_code == 1 and "--table" in r.stderr
    monkeypatch.setitem(sys.modules, "lancedb", None)  # as if it were not installed
    r = invoke("push", str(ix), "--to", f"lancedb:{tmp_path / 'lance'}")
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        "indexer: error: push to LanceDB needs the lancedb package: pip install 'indexer[lancedb]'"]


def test_pushes_during_a_sync_end_equal(tmp_path: Path) -> None:
    """Pushes run while a sync commits (threads, separate connections): each sends its snapshot, and
    the push after the sync leaves the table equal to the index."""
    import threading

    ix, db = tmp_path / "ix", tmp_path / "lance"
    sync(ix, docs(50))
    big = {**docs(3000, version=1)}
    del big["doc-001"]
    errors: list[BaseException] = []

    def run_sync() -> None:
        try:
            indexer.sync(ix, list(big.items()),
                         indexer.SyncOptions(delete_missing=True, settings=Settings(chunk_rows=64)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    worker = threading.Thread(target=run_sync)
    worker.start()
    pushes = 0
    while worker.is_alive() or pushes == 0:
        push(ix, f"lancedb:{db}", batch_rows=500)
        pushes += 1
    worker.join()
    assert not errors
    push(ix, f"lancedb:{db}")
    assert_mirrored(ix, db)
    assert len(table_rows(db)) == 2999


def test_a_failing_store_stops_the_push_with_one_line_and_the_next_push_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from indexer.targets import lancedb as lancedb_target

    ix, db = tmp_path / "ix", tmp_path / "lance"
    sync(ix, docs(10))
    real_insert = lancedb_target.LanceDBTarget.insert

    def broken(self: Any, rows: Any) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(lancedb_target.LanceDBTarget, "insert", broken)
    r = invoke("push", str(ix), "--to", f"lancedb:{db}")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].endswith("OSError: disk on fire; the push stopped part-way, "
                                                      "nothing is lost: fix that and push again to finish")
    monkeypatch.setattr(lancedb_target.LanceDBTarget, "insert", real_insert)
    assert push(ix, f"lancedb:{db}").upserted == 10
    assert_mirrored(ix, db)


def test_long_documents_are_pushed_as_the_mean_of_their_chunks(tmp_path: Path) -> None:
    """A chunked index pushed at --level documents: a long document is served, and pushed, as the
    normalized mean of its chunk vectors; an edit of one of its chunks pushes its new row."""
    ix, db = tmp_path / "ix", tmp_path / "db"
    documents = {**docs(5), "long": "alpha beta gamma.\n\ndelta epsilon zeta.\n\neta theta iota."}
    sync(ix, documents, chunk_tokens=3)
    with indexer.open(ix) as idx:
        assert idx.status()["chunks"] == 5 + 3
    assert push(ix, f"lancedb:{db}", level="documents").upserted == 6
    assert_mirrored(ix, db, level="documents")
    documents["long"] = documents["long"].replace("epsilon", "omega")
    sync(ix, documents, chunk_tokens=3)
    assert push(ix, f"lancedb:{db}").upserted == 1  # the table's level: documents
    assert_mirrored(ix, db, level="documents")


def test_a_chunked_index_is_pushed_one_row_a_chunk(tmp_path: Path) -> None:
    """The default for a chunked index: one row a chunk, with its number and character span; a
    document that changes to fewer chunks leaves no row of the chunks it lost."""
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = {f"doc-{i}": paragraphs(f"d{i}", n) for i, n in enumerate([5, 1, 3, 2, 4])}
    current["short"] = "short"
    sync(ix, current, chunk_tokens=3)
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--json")
    assert r.exit_code == 0, r.output
    first = json.loads(r.stdout)
    assert (first["level"], first["upserted"], first["upserted_rows"], first["rows"], first["served"],
            first["served_rows"]) == ("chunks", 6, 16, 16, 6, 16)
    assert "upserted 6 document(s) (16 chunk rows)" in r.stderr
    assert_mirrored(ix, db, level="chunks")
    got = table_chunks(db)
    assert sorted(k for i, k in got if i == "doc-0") == [0, 1, 2, 3, 4]
    for (doc_id, chunk), (start, end, _) in got.items():  # the spans cut the document's own text
        assert current[doc_id][start:end] == ("short" if doc_id == "short" else f"d{doc_id[4:]} v0 p{chunk}.")

    current["doc-0"] = paragraphs("d0", 3, version=1)  # 5 chunks -> 3
    sync(ix, current, chunk_tokens=3)
    second = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (second["upserted"], second["upserted_rows"], second["deleted"], second["rows"]) == (1, 3, 0, 14)
    assert sorted(k for i, k in table_chunks(db) if i == "doc-0") == [0, 1, 2]
    assert_mirrored(ix, db, level="chunks")

    current["doc-1"] = paragraphs("d1", 4, version=1)  # 1 chunk -> 4
    del current["doc-4"]  # 4 chunks
    sync(ix, current, chunk_tokens=3)
    third = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (third["upserted"], third["upserted_rows"], third["deleted"], third["rows"]) == (1, 4, 1, 13)
    assert not any(i == "doc-4" for i, _ in table_chunks(db))
    assert_mirrored(ix, db, level="chunks")
    nothing = json.loads(invoke("push", str(ix), "--to", f"lancedb:{db}", "--json").stdout)
    assert (nothing["upserted"], nothing["upserted_rows"], nothing["deleted"]) == (0, 0, 0)


def test_the_level_is_the_tables_and_another_is_refused_unless_replaced(tmp_path: Path) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = {"long": paragraphs("long", 3), "short": "short"}
    sync(ix, current, chunk_tokens=3)
    assert push(ix, f"lancedb:{db}").level == "chunks"
    before = table_chunks(db)
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--level", "documents")
    assert r.exit_code == 1
    assert "holds one row a chunk (it was pushed at --level chunks); nothing was sent" in r.stderr
    assert "--replace" in r.stderr
    assert table_chunks(db) == before

    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--level", "documents", "--replace", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["level"] == "documents"
    assert_mirrored(ix, db, level="documents")
    current["long"] = paragraphs("long", 2, version=1)
    sync(ix, current, chunk_tokens=3)
    again = push(ix, f"lancedb:{db}")  # no --level: the table's, documents
    assert (again.level, again.upserted, again.upserted_rows, again.rows) == ("documents", 1, 1, 2)
    assert_mirrored(ix, db, level="documents")
    r = invoke("push", str(ix), "--to", f"lancedb:{db}", "--level", "chunks")
    assert r.exit_code == 1 and "holds one row a document" in r.stderr


def test_an_unchunked_index_is_pushed_one_row_a_document_unless_chunks_are_asked(tmp_path: Path) -> None:
    ix, db = tmp_path / "ix", tmp_path / "lance"
    current = docs(4)
    sync(ix, current, chunking=False)
    assert push(ix, f"lancedb:{db}").level == "documents"
    assert table_level(db) == "documents"
    assert_mirrored(ix, db, level="documents")
    report = push(ix, f"lancedb:{db}", table="spans", level="chunks")
    assert (report.upserted, report.upserted_rows, report.rows) == (4, 4, 4)
    got = table_chunks(db, "spans")
    assert got[("doc-002", 0)][:2] == (0, len(current["doc-002"]))
    assert_mirrored(ix, db, "spans", level="chunks")
    with pytest.raises(indexer.IndexerError, match="push level 'passages': choose documents or chunks"):
        push(ix, f"lancedb:{db}", level="passages")
