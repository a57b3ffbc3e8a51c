"""Hostile input (issue 5): whatever the sources hold, each bad record gets a clear message or a counted
skip, never a traceback and never a silent loss. After a sync every well-formed record is in the index
with the vector of its exact text, and every bad one is counted in `skipped` with a warning naming where.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import indexer
from indexer import Index, SourceError
from indexer.cli import cli
from indexer.embedders.fake import FakeEmbedder
from indexer.sources import FolderFilter, Record, Skip, open_source

from helpers import assert_serves, served

MODEL = "fake:8"
FAKE = FakeEmbedder(8)
FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SYNC = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- local helpers ------------------------------------------------------------------------------------

def run(index_dir: Path, *paths: Path | str, **kw: Any) -> indexer.SyncSummary:
    return indexer.sync(index_dir, paths=[str(p) for p in paths],
                        options=indexer.SyncOptions(model=MODEL, **kw))


def assert_index_holds(index_dir: Path, expected: dict[str, str]) -> None:
    assert_serves(index_dir, expected, dim=8)  # MODEL's


def assert_skipped(summary: indexer.SyncSummary, *wheres: str) -> None:
    """Exactly these places were skipped, each with one warning naming it."""
    assert summary.skipped == len(wheres), summary.warnings
    for where in wheres:
        named = [w for w in summary.warnings if w.startswith(f"{where}: skipped")]
        assert len(named) == 1, (where, summary.warnings)


def jsonl_line(obj: object) -> bytes:
    return orjson.dumps(obj) + b"\n"


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per Hypothesis example (function-scoped fixtures are shared across examples)."""
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


# -- strategies ---------------------------------------------------------------------------------------

ids = st.one_of(st.text(min_size=1, max_size=20),
                st.integers(min_value=-(2**63), max_value=2**63 - 1))
texts = st.text(min_size=1, max_size=60).filter(lambda t: t.strip() != "")
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=8)
garbage_lines = st.binary(max_size=80).map(lambda b: b.replace(b"\n", b""))


def _expect(row: object) -> tuple[str, str] | None:
    """What the reader must make of a JSON value: (id, text) if usable, else None (a skip)."""
    if not isinstance(row, dict):
        return None
    doc_id, text = row.get("id"), row.get("text")
    if isinstance(doc_id, bool) or not (isinstance(doc_id, int) or (isinstance(doc_id, str) and doc_id)):
        return None
    if not isinstance(text, str) or not text.strip():
        return None
    return str(doc_id), text


# -- Hypothesis: the readers ----------------------------------------------------------------------------

@FUZZ
@given(st.lists(st.one_of(st.tuples(st.just("good"), ids, texts), st.tuples(st.just("junk"), garbage_lines)),
                max_size=25))
def test_jsonl_reader_on_arbitrary_lines(lines: list[tuple[object, ...]]) -> None:
    with scratch() as d:
        src = d / "fuzz.jsonl"
        src.write_bytes(b"".join(jsonl_line({"id": ln[1], "text": ln[2]}) if ln[0] == "good"
                                 else ln[1] + b"\n" for ln in lines))  # type: ignore[operator]
        try:
            items = list(open_source(str(src)))  # a readable file never breaks off
        except SourceError as exc:  # ... but one with no usable record at all is refused at open
            assert not any(ln[0] == "good" for ln in lines) and "none of its" in str(exc)
            return
        by_where: dict[str, list[Record | Skip]] = {}
        for item in items:
            assert isinstance(item, (Record, Skip))
            by_where.setdefault(item.where, []).append(item)
        for n, ln in enumerate(lines, 1):
            got = by_where.pop(f"{src}:{n}", [])
            if ln[0] == "good":
                assert len(got) == 1 and isinstance(got[0], Record), got
                assert (got[0].id, got[0].text) == (str(ln[1]), ln[2])
            elif isinstance(ln[1], bytes) and not ln[1].strip():
                assert got == []  # a blank line is no record
            else:
                assert len(got) == 1, got  # junk is one skip (or, by chance, one valid record)
                if isinstance(got[0], Skip):
                    assert got[0].reason
        assert by_where == {}


@FUZZ
@given(st.lists(st.one_of(json_values, st.fixed_dictionaries(
    {"id": st.one_of(ids, json_values), "text": st.one_of(texts, json_values)},
    optional={"meta": json_values})), min_size=1, max_size=20))
def test_jsonl_reader_on_arbitrary_json_values(rows: list[object]) -> None:
    with scratch() as d:
        src = d / "fuzz.jsonl"
        src.write_bytes(b"".join(jsonl_line(r) for r in rows))
        if all(_expect(row) is None for row in rows):  # nothing usable: refused at open, naming why
            with pytest.raises(SourceError, match="none of its"):
                open_source(str(src))
            return
        items = list(open_source(str(src)))
        assert len(items) == len(rows)
        for n, (row, item) in enumerate(zip(rows, items, strict=True), 1):
            assert item.where == f"{src}:{n}"
            expected = _expect(row)
            if expected is None:
                assert isinstance(item, Skip) and item.reason
            else:
                assert isinstance(item, Record) and (item.id, item.text) == expected


@FUZZ
@given(st.binary(max_size=200))
def test_jsonl_reader_on_arbitrary_bytes(data: bytes) -> None:
    with scratch() as d:
        cases = (("raw.jsonl", data), ("raw.jsonl.gz", data), ("ok.jsonl.gz", gzip.compress(data)))
        for name, payload in cases:
            src = d / name
            src.write_bytes(payload)
            try:
                items = list(open_source(str(src)))
            except SourceError as exc:
                assert str(src) in str(exc)
                # only a file that is not whole gzip may break off; one with lines but no usable
                # record is refused at open
                assert name == "raw.jsonl.gz" or "none of its" in str(exc)
                continue
            assert all(isinstance(i, (Record, Skip)) for i in items)
            assert len(items) <= data.count(b"\n") + 1


@FUZZ
@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=40)), max_size=15))
def test_csv_reader_round_trips_any_fields(rows: list[tuple[str, str]]) -> None:
    with scratch() as d:
        src = d / "fuzz.csv"
        with src.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text"])
            w.writerows(rows)
        items = list(open_source(str(src)))
        assert len(items) == len(rows)
        line = 2
        for (doc_id, text), item in zip(rows, items, strict=True):
            assert item.where == f"{src}:{line}"  # the line the row starts on, quoted newlines counted
            # The file is read in lines ending at \r\n, \r or \n; a row ends with one more break.
            line += 1 + sum(f.count("\n") + f.count("\r") - f.count("\r\n") for f in (doc_id, text))
            if doc_id and text.strip():
                assert isinstance(item, Record) and (item.id, item.text) == (doc_id, text)
            else:
                assert isinstance(item, Skip) and item.reason


@FUZZ
@given(st.binary(max_size=120))
def test_text_file_with_any_bytes(data: bytes) -> None:
    with scratch() as d:
        root = d / "dir"
        root.mkdir()
        (root / "f.txt").write_bytes(data)
        items = list(open_source(str(root)))
        assert len(items) == 1
        item = items[0]
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if b"\x00" in data:  # binary: skipped, counted in one warning for all such files (group)
                assert isinstance(item, Skip) and item.group == "binary file" and item.id == "f.txt"
                return
            assert isinstance(item, Skip) and "not valid UTF-8" in item.reason and item.id == "f.txt"
            return
        if text.strip():
            assert isinstance(item, Record) and (item.id, item.text) == ("f.txt", text)
        else:
            assert isinstance(item, Skip) and "empty" in item.reason


def _gz_corpus(n: int) -> bytes:
    return gzip.compress(b"".join(jsonl_line({"id": f"g{i}", "text": f"gz line {i} " + "x" * (i % 7)})
                                  for i in range(n)))


_GZ_WHOLE = _gz_corpus(400)


@FUZZ
@given(st.integers(min_value=1, max_value=len(_GZ_WHOLE) - 1))
def test_truncated_gz_at_any_byte(cut: int) -> None:
    with scratch() as d:
        src = d / "cut.jsonl.gz"
        src.write_bytes(_GZ_WHOLE[:cut])
        got: list[Record | Skip] = []
        with pytest.raises(SourceError) as info:
            for item in open_source(str(src)):
                got.append(item)
        assert str(src) in str(info.value) and "no document was deleted" in str(info.value)
        # What came before the break is a prefix of the file, each record whole.
        assert all(isinstance(i, Record) for i in got)
        assert [(i.id, i.text) for i in got] == [  # type: ignore[union-attr]
            (f"g{k}", f"gz line {k} " + "x" * (k % 7)) for k in range(len(got))]


# -- Hypothesis: the whole pipeline ---------------------------------------------------------------------

@FUZZ_SYNC
@given(st.lists(st.one_of(st.tuples(st.just("good"), texts),
                          st.tuples(st.just("junk"), garbage_lines.filter(lambda b: b.strip() != b""))),
                max_size=20))
def test_sync_keeps_every_good_record_and_counts_every_bad_one(lines: list[tuple[str, object]]) -> None:
    with scratch() as d:
        src = d / "mix.jsonl"
        out: list[bytes] = []
        good: dict[str, str] = {}
        junk: list[str] = []
        for kind, payload in lines:
            n = len(out) + 1
            if kind == "good":
                assert isinstance(payload, str)
                good[f"doc{n}"] = payload
                out.append(jsonl_line({"id": f"doc{n}", "text": payload}))
                continue
            assert isinstance(payload, bytes)
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                parsed = None
            if _expect(parsed) is not None:  # junk that happens to be a usable record is not junk
                continue
            junk.append(f"{src}:{n}")
            out.append(payload + b"\n")
        src.write_bytes(b"".join(out))
        if junk and not good:  # nothing usable: refused before anything is written
            with pytest.raises(SourceError, match="none of its"):
                run(d / "idx", src)
            assert not (d / "idx").exists()
            return
        summary = run(d / "idx", src)
        assert summary.scanned == len(good)
        assert_skipped(summary, *junk)
        assert_index_holds(d / "idx", good)


# -- specific hostile inputs ----------------------------------------------------------------------------

def test_invalid_utf8_in_a_jsonl_line(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"fine"}\n{"id":"b","text":"bad \xff\xfe bytes"}\n'
                    b'{"id":"c\xc3","text":"bad id"}\n\xef\xbb\xbf{"id":"d","text":"after bom"}\n'
                    b'{"id":"e","text":"also fine"}\n')
    s = run(tmp_path / "idx", src)
    assert_skipped(s, f"{src}:2", f"{src}:3", f"{src}:4")
    assert all("not valid JSON" in w for w in s.warnings)
    assert_index_holds(tmp_path / "idx", {"a": "fine", "e": "also fine"})


def test_invalid_utf8_in_a_text_file_is_skipped_and_its_document_not_deleted(tmp_path: Path) -> None:
    root = tmp_path / "dir"
    root.mkdir()
    (root / "ok.txt").write_text("good", encoding="utf-8")
    (root / "bin.txt").write_text("was good once", encoding="utf-8")
    run(tmp_path / "idx", root)
    (root / "bin.txt").write_bytes(b"now \x80\x81 broken")
    s = run(tmp_path / "idx", root, delete_missing=True)
    assert_skipped(s, str(root / "bin.txt"))
    assert "not valid UTF-8 at byte 4" in s.warnings[0]
    assert s.deleted == 0  # the file is there, only unreadable: its old vector stays
    assert_index_holds(tmp_path / "idx", {"ok.txt": "good", "bin.txt": "was good once"})


def test_undecodable_file_name(tmp_path: Path) -> None:
    root = tmp_path / "dir"
    root.mkdir()
    (root / "ok.txt").write_text("good", encoding="utf-8")
    bad = os.fsencode(str(root)) + b"/name\xff.txt"
    with open(bad, "wb") as f:
        f.write(b"content")
    s = run(tmp_path / "idx", root)
    assert s.skipped == 1 and "file name is not valid UTF-8" in s.warnings[0]
    assert_index_holds(tmp_path / "idx", {"ok.txt": "good"})


def test_lone_surrogates(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"lone \\ud800 high"}\n{"id":"b","text":"lone \\udc00 low"}\n'
                    b'{"id":"\\ud800","text":"bad id"}\n{"id":"c","text":"pair \\ud83d\\ude00 ok"}\n')
    s = run(tmp_path / "idx", src)
    assert_skipped(s, f"{src}:1", f"{src}:2", f"{src}:3")
    assert_index_holds(tmp_path / "idx", {"c": "pair \U0001f600 ok"})


def test_lone_surrogates_from_python(tmp_path: Path) -> None:
    s = indexer.sync(tmp_path / "idx", [{"id": "a", "text": "ok"}, {"id": "b", "text": "x\ud800"},
                                        {"id": "\udcff", "text": "bad id"}, ("c", "pair ok"), 42, None],
                     indexer.SyncOptions(model=MODEL))
    assert_skipped(s, "<python> item 2", "<python> item 3", "<python> item 5", "<python> item 6")
    assert "not valid Unicode" in s.warnings[0] and "not valid Unicode" in s.warnings[1]
    assert_index_holds(tmp_path / "idx", {"a": "ok", "c": "pair ok"})


def test_nul_bytes(tmp_path: Path) -> None:
    j = tmp_path / "d.jsonl"
    j.write_bytes(b'{"id":"j","text":"before\\u0000after"}\n{"id":"nul\\u0000id","text":"x"}\n')
    c = tmp_path / "d.csv"
    c.write_bytes(b'id,text\nc,"csv\x00nul"\n')
    root = tmp_path / "dir"
    root.mkdir()
    (root / "t.txt").write_bytes(b"file\x00with nul")
    s = run(tmp_path / "idx", j, c, root)
    assert s.skipped == 0
    expected = {"j": "before\x00after", "nul\x00id": "x", "c": "csv\x00nul", "t.txt": "file\x00with nul"}
    assert_index_holds(tmp_path / "idx", expected)
    # The NUL is part of the text: a text cut at the NUL would have another vector.
    assert not np.array_equal(served(tmp_path / "idx")["j"], FAKE.embed(["before"])[0])


def test_one_large_document(tmp_path: Path) -> None:
    big = ("large document " * 200_000)[:3_000_000]  # 3 MB on one line
    src = tmp_path / "big.jsonl"
    src.write_bytes(jsonl_line({"id": "big", "text": big}) + jsonl_line({"id": "small", "text": "s"}))
    root = tmp_path / "dir"
    root.mkdir()
    (root / "big.txt").write_text(big + "!", encoding="utf-8")
    s = run(tmp_path / "idx", src, root)
    assert (s.scanned, s.skipped) == (3, 0)
    assert_index_holds(tmp_path / "idx", {"big": big, "small": "s", "big.txt": big + "!"})


@pytest.mark.slow
def test_one_50mb_document(tmp_path: Path) -> None:
    big = "fifty megabytes " * (50 * 2**20 // 16)
    src = tmp_path / "big.jsonl"
    src.write_bytes(jsonl_line({"id": "huge", "text": big}))
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped, s.embedded) == (1, 0, 1)
    assert_index_holds(tmp_path / "idx", {"huge": big})


def test_many_tiny_documents(tmp_path: Path) -> None:
    n = 20_000
    src = tmp_path / "many.jsonl"
    src.write_bytes(b"".join(jsonl_line({"id": i, "text": f"t{i}"}) for i in range(n)))
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.new, s.embedded, s.skipped) == (n, n, n, 0)
    got = served(tmp_path / "idx")
    assert len(got) == n and set(got) == {str(i) for i in range(n)}
    for i in (0, 1, 9_999, 10_000, n - 1):  # across scan batches and chunks
        np.testing.assert_array_equal(got[str(i)], FAKE.embed([f"t{i}"])[0])
    with Index.open(tmp_path / "idx") as idx:
        assert idx.verify().ok


def test_deeply_nested_json(tmp_path: Path) -> None:
    deep_ok = {"id": "ok", "text": "nested meta is fine", "meta": orjson.loads(b"[" * 200 + b"]" * 200)}
    src = tmp_path / "d.jsonl"
    src.write_bytes(jsonl_line(deep_ok)
                    + b"[" * 100_000 + b"]" * 100_000 + b"\n"
                    + b'{"id":"x","text":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}\n"
                    + jsonl_line({"id": "obj", "text": {"a": {"b": "c"}}})
                    + b'{"id":"unclosed","text":"' + b"[" * 10_000 + b"\n")
    s = run(tmp_path / "idx", src)
    assert_skipped(s, f"{src}:2", f"{src}:3", f"{src}:4", f"{src}:5")
    assert "not valid JSON" in s.warnings[0] and "'text' must be a string, got dict" in s.warnings[2]
    assert_index_holds(tmp_path / "idx", {"ok": "nested meta is fine"})


def test_csv_with_hostile_fields(tmp_path: Path) -> None:
    rows = [("a", 'he said "hi"\r\nthen, left'), ("b/../c", "line1\nline2\rline3"), ("ü", '""'),
            ("d", ",,,"), ("e", "   "), ("f", "trailing\n")]
    src = tmp_path / "d.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["id", "text"])
        w.writerows(rows)
    with src.open("a", newline="", encoding="utf-8") as f:
        f.write('g,"unterminated quote, to the end\n')
    s = run(tmp_path / "idx", src)
    # e (blank) is skipped on the line it starts on: header 1, a 2-3, b 4-6, ü 7, d 8, e 9, f 10-11.
    # g's quote is never closed (issue 10, item 13): it would swallow every row after it, so it is
    # skipped and the file is reported as cut, not read as one field to the end.
    assert_skipped(s, f"{src}:9", f"{src}:12")
    assert "never closed" in s.warnings[1]
    assert s.incomplete_sources == [s.warnings[1].replace(": skipped", "")]
    assert_index_holds(tmp_path / "idx", {k: v for k, v in rows if v.strip()})


def test_hostile_ids(tmp_path: Path) -> None:
    hostile = ["a/b/c", "../../etc/passwd", "..", ".", "/abs/path", "ü日本/🙂", "with space", "tab\tid",
               "back\\slash", "-", "'; DROP TABLE documents; --", "%s%n", "0", "00", "-1"]
    src = tmp_path / "d.jsonl"
    src.write_bytes(b"".join(jsonl_line({"id": i, "text": f"text of {i}"}) for i in hostile))
    before = sorted(p.name for p in tmp_path.iterdir())
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (len(hostile), 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "idx"])  # no path made from an id
    assert_index_holds(tmp_path / "idx", {i: f"text of {i}" for i in hostile})
    with Index.open(tmp_path / "idx") as idx:
        idx.export(tmp_path / "x.npy", tmp_path / "ids.txt")
        np.testing.assert_array_equal(idx.get(["../../etc/passwd"])[0],
                                      FAKE.embed(["text of ../../etc/passwd"])[0])
    assert sorted(indexer.read_ids(tmp_path / "ids.txt")) == sorted(hostile)


def test_hostile_paths_in_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "dir"
    for rel in ["..hidden/..dots", "ü日本/🙂.txt", "a b/c d", ".git/config", "x/y/z/w/v/u.txt"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"content of {rel}", encoding="utf-8")
    s = run(tmp_path / "idx", root, folder=FolderFilter(hidden=True))  # .git/ is never read
    assert s.skipped == 0
    assert_index_holds(tmp_path / "idx", {rel: f"content of {rel}" for rel in
                                          ["..hidden/..dots", "ü日本/🙂.txt", "a b/c d",
                                           "x/y/z/w/v/u.txt"]})


def test_empty_files(tmp_path: Path) -> None:
    empty_jsonl = tmp_path / "e.jsonl"
    empty_jsonl.write_bytes(b"")
    blank_jsonl = tmp_path / "blank.jsonl"
    blank_jsonl.write_bytes(b"\n\n  \n")
    empty_gz = tmp_path / "e.jsonl.gz"
    empty_gz.write_bytes(gzip.compress(b""))
    header_only = tmp_path / "h.csv"
    header_only.write_text("id,text\n", encoding="utf-8")
    no_rows = tmp_path / "e.parquet"
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), no_rows)
    root = tmp_path / "dir"
    (root / "empty_sub").mkdir(parents=True)
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.txt").write_bytes(b" \n\t")
    s = run(tmp_path / "idx", empty_jsonl, blank_jsonl, empty_gz, header_only, no_rows, root)
    assert s.scanned == 0
    assert_skipped(s, str(root / "blank.txt"), str(root / "empty.txt"))
    assert all("empty text" in w for w in s.warnings)
    assert served(tmp_path / "idx") == {}

    empty_csv = tmp_path / "e.csv"
    empty_csv.write_bytes(b"")
    with pytest.raises(SourceError, match="empty"):
        run(tmp_path / "idx2", empty_csv)
    assert not (tmp_path / "idx2").exists()


def test_truncated_gz_deletes_nothing_and_keeps_what_was_read(tmp_path: Path) -> None:
    whole = _gz_corpus(3000)
    full = tmp_path / "full.jsonl.gz"
    full.write_bytes(whole)
    run(tmp_path / "idx", full)
    cut = tmp_path / "full.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(SourceError, match="broke off"):
        run(tmp_path / "idx", cut, delete_missing=True)
    with Index.open(tmp_path / "idx") as idx:
        st = idx.status()
    assert (st["documents"], st["deleted"], st["done"]) == (3000, 0, 3000)


@pytest.mark.parametrize("column", [
    pa.array([b"\xff\xfe"], pa.binary()), pa.array([["a", "b"]]), pa.array([{"x": 1}]),
    pa.array([1.0]), pa.array([True]),
])
def test_wrong_type_parquet(tmp_path: Path, column: pa.Array) -> None:
    for role in ("id", "text"):
        cols = {"id": pa.array(["a"]), "text": pa.array(["t"]), role: column}
        src = tmp_path / f"{role}.parquet"
        pq.write_table(pa.table(cols), src)
        with pytest.raises(SourceError, match=f"column '{role}' has type") as info:
            run(tmp_path / "idx", src)
        assert str(src) in str(info.value)
        assert not (tmp_path / "idx").exists()


def test_categorical_parquet_columns_are_read(tmp_path: Path) -> None:
    src = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"id": pa.array(["a", "b", "a2"]).dictionary_encode(),
                             "text": pa.array(["same", "same", "other"]).dictionary_encode()}), src)
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped, s.embedded) == (3, 0, 2)  # identical texts are embedded once
    assert_index_holds(tmp_path / "idx", {"a": "same", "b": "same", "a2": "other"})


# -- symbolic links -------------------------------------------------------------------------------------

def test_symlinks_out_of_the_directory_are_refused_inside_followed(tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read me", encoding="utf-8")
    root = tmp_path / "dir"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "real.txt").write_text("inside text", encoding="utf-8")
    (root / "out_link").symlink_to(outside)
    (root / "out_rel").symlink_to(Path("..") / "secret.txt")
    (root / "in_link").symlink_to(root / "sub" / "real.txt")
    (root / "dir_link").symlink_to(root / "sub", target_is_directory=True)
    (root / "broken").symlink_to(root / "nothing_here")
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    s = run(tmp_path / "idx", root)
    assert_skipped(s, str(root / "out_link"), str(root / "out_rel"), str(root / "dir_link"),
                   str(root / "broken"), str(root / "loop_a"), str(root / "loop_b"))
    assert any("symbolic link out of" in w and "not followed" in w for w in s.warnings)
    assert "do not read me" not in " ".join(s.warnings)
    assert_index_holds(tmp_path / "idx", {"sub/real.txt": "inside text", "in_link": "inside text"})


# -- through the command line: never a traceback --------------------------------------------------------

def test_cli_on_a_hostile_corpus(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"ok"}\n\xff\xfe\n{"id":"b","text":"\\ud800"}\n'
                    + b"[" * 50_000 + b"\n" + b'{"id":"a","text":"dup"}\n{"id":"c","text":"n\\u0000ul"}\n')
    root = tmp_path / "dir"
    root.mkdir()
    (root / "x.txt").write_bytes(b"\xc3\x28")
    (root / "link").symlink_to(src)
    r = CliRunner().invoke(cli, ["sync", str(src), str(root), "--index", str(tmp_path / "idx"),
                                 "--model", MODEL, "--json"])
    assert r.exit_code == 0, r.output
    assert r.exception is None and "Traceback" not in r.output
    summary = orjson.loads(r.stdout)
    assert (summary["scanned"], summary["skipped"]) == (2, 6)
    for where in (f"{src}:2", f"{src}:3", f"{src}:4", f"{src}:5", str(root / "x.txt"), str(root / "link")):
        assert f"indexer: warning: {where}: skipped" in r.stderr
    assert_index_holds(tmp_path / "idx", {"a": "ok", "c": "n\x00ul"})


def test_stdin_with_hostile_bytes(tmp_path: Path) -> None:
    data = b'{"id":"s","text":"ok"}\n\x00\x01\x02\n\xff\n{"id":"t","text":"fine"}'  # no final newline
    r = CliRunner().invoke(cli, ["sync", "-", "--index", str(tmp_path / "idx"), "--model", MODEL],
                           input=io.BytesIO(data))
    assert r.exit_code == 0 and r.exception is None, r.output
    assert "<stdin>:2: skipped" in r.stderr and "<stdin>:3: skipped" in r.stderr
    assert_index_holds(tmp_path / "idx", {"s": "ok", "t": "fine"})
