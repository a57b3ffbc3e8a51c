"""Source readers: every format reads correctly, and every bad input gets its documented behaviour.

Good records end up in the index with the vector of exactly their text (checked against the fake model);
bad records are skipped, counted and named by file and line (or row); a source that cannot be read at all
stops the sync before anything is written.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sys
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import indexer
from indexer import Index, SourceError
from indexer.embedders.fake import FakeEmbedder
from indexer.sources import Record, Skip, open_source, open_sources

from helpers import assert_serves, served

MODEL = "fake:8"
FAKE = FakeEmbedder(8)


# -- local helpers ------------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def run(index_dir: Path, *paths: Path | str, **kw: Any) -> indexer.SyncSummary:
    return indexer.sync(index_dir, paths=[str(p) for p in paths],
                        options=indexer.SyncOptions(model=MODEL, **kw))


def assert_index_holds(index_dir: Path, expected: dict[str, str]) -> None:
    assert_serves(index_dir, expected, dim=8)  # MODEL's


def read_all(spec: str, **kw: Any) -> list[Record | Skip]:
    return list(open_source(spec, **kw))


def warnings_about(summary: indexer.SyncSummary, needle: str) -> list[str]:
    return [w for w in summary.warnings if needle in w]


# -- each format reads correctly ----------------------------------------------------------------------

def test_jsonl(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", [{"id": "a", "text": "alpha"}, {"id": 7, "text": "seven"},
                                                 {"id": "u", "text": "üñí 日本", "extra": {"x": 1}}])
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.new, s.skipped, s.embedded) == (3, 3, 0, 3)
    assert_index_holds(tmp_path / "idx", {"a": "alpha", "7": "seven", "u": "üñí 日本"})


def test_jsonl_blank_lines_are_ignored_and_line_numbers_count_them(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"x"}\n\n   \n{"id":"b"}\n')
    items = read_all(str(src))
    assert [type(i) for i in items] == [Record, Skip]
    assert items[0].where == f"{src}:1"
    assert items[1].where == f"{src}:4"


def test_jsonl_gz(tmp_path: Path) -> None:
    src = tmp_path / "docs.jsonl.gz"
    with gzip.open(src, "wb") as f:
        for i in range(50):
            f.write(orjson.dumps({"id": f"d{i}", "text": f"text {i}"}) + b"\n")
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (50, 0)
    assert_index_holds(tmp_path / "idx", {f"d{i}": f"text {i}" for i in range(50)})


def test_csv_quoted_fields_and_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "docs.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "text", "lang"])
        w.writerow(["a", 'first line\nsecond "quoted" line, with comma', "en"])  # lines 2-3
        w.writerow(["b", "", "en"])  # line 4: empty text
        w.writerow(["c", 'three\nline\n"field"', "en"])  # lines 5-7
        w.writerow(["", "no id", "en"])  # line 8
        w.writerow(["e", "plain", "en"])  # line 9
    items = read_all(str(src))
    assert [(type(i).__name__, i.where) for i in items] == [
        ("Record", f"{src}:2"), ("Skip", f"{src}:4"), ("Record", f"{src}:5"), ("Skip", f"{src}:8"),
        ("Record", f"{src}:9")]
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (3, 2)
    assert warnings_about(s, f"{src}:4") and "empty text" in warnings_about(s, f"{src}:4")[0]
    assert warnings_about(s, f"{src}:8")
    assert_index_holds(tmp_path / "idx", {"a": 'first line\nsecond "quoted" line, with comma',
                                          "c": 'three\nline\n"field"', "e": "plain"})


def test_csv_header_spanning_lines(tmp_path: Path) -> None:
    src = tmp_path / "docs.csv"
    src.write_text('id,"the\ntext"\na,hello\nb,\n', encoding="utf-8")
    items = read_all(str(src), text_field="the\ntext")
    assert [(type(i).__name__, i.where) for i in items] == [("Record", f"{src}:3"), ("Skip", f"{src}:4")]


def test_csv_with_byte_order_mark_and_extra_fields(tmp_path: Path) -> None:
    src = tmp_path / "bom.csv"
    src.write_bytes(b"\xef\xbb\xbfid,text\r\na,hello\r\nb,x,surplus\r\n")
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (1, 1)
    assert any(f"{src}:3" in w and "more fields" in w for w in s.warnings)
    assert_index_holds(tmp_path / "idx", {"a": "hello"})


@pytest.mark.parametrize("id_type", [pa.string(), pa.large_string(), pa.int64(), pa.int32()])
def test_parquet_string_and_integer_ids(tmp_path: Path, id_type: pa.DataType) -> None:
    ids = ["10", "20", "30"] if pa.types.is_string(id_type) or pa.types.is_large_string(id_type) \
        else [10, 20, 30]
    table = pa.table({"id": pa.array(ids, id_type), "text": ["ten", "twenty", "thirty"],
                      "other": [1.0, 2.0, 3.0]})
    src = tmp_path / "docs.parquet"
    pq.write_table(table, src, row_group_size=2)
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (3, 0)
    assert_index_holds(tmp_path / "idx", {"10": "ten", "20": "twenty", "30": "thirty"})


def test_parquet_null_cells_are_skipped_with_their_row(tmp_path: Path) -> None:
    src = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": ["a", None, "c"], "text": ["x", "y", None]}), src)
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (1, 2)
    assert warnings_about(s, f"{src} row 2") and warnings_about(s, f"{src} row 3")
    assert_index_holds(tmp_path / "idx", {"a": "x"})


def test_directory_of_text_files(tmp_path: Path) -> None:
    root = tmp_path / "corpus"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "top.txt").write_text("top level", encoding="utf-8")
    (root / "sub" / "a.md").write_text("in sub", encoding="utf-8")
    (root / "sub" / "deeper" / "b").write_text("deep\nmulti line", encoding="utf-8")
    (root / "sub" / "ünï.txt").write_text("unicode name", encoding="utf-8")
    s = run(tmp_path / "idx", root)
    assert (s.scanned, s.skipped) == (4, 0)
    assert_index_holds(tmp_path / "idx", {"top.txt": "top level", "sub/a.md": "in sub",
                                          "sub/deeper/b": "deep\nmulti line", "sub/ünï.txt": "unicode name"})


def test_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = b'{"id":"s1","text":"from stdin"}\n{"id":"s2","text":"also"}\nbroken\n'
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    s = run(tmp_path / "idx", "-")
    assert (s.scanned, s.skipped) == (2, 1)
    assert warnings_about(s, "<stdin>:3")
    assert_index_holds(tmp_path / "idx", {"s1": "from stdin", "s2": "also"})


def test_several_sources_in_one_sync(tmp_path: Path) -> None:
    j = write_jsonl(tmp_path / "a.jsonl", [{"id": "j1", "text": "json one"}])
    c = tmp_path / "b.csv"
    c.write_text("id,text\nc1,csv one\n", encoding="utf-8")
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["p1"], "text": ["parquet one"]}), p)
    d = tmp_path / "dir"
    d.mkdir()
    (d / "t1.txt").write_text("text one", encoding="utf-8")
    s = run(tmp_path / "idx", j, c, p, d)
    assert (s.scanned, s.new, s.skipped) == (4, 4, 0)
    assert_index_holds(tmp_path / "idx", {"j1": "json one", "c1": "csv one", "p1": "parquet one",
                                          "t1.txt": "text one"})


def test_id_and_text_field_options(tmp_path: Path) -> None:
    j = write_jsonl(tmp_path / "a.jsonl", [{"doc_id": "j1", "body": "json body", "text": "not this"}])
    c = tmp_path / "b.csv"
    c.write_text("body,doc_id\ncsv body,c1\n", encoding="utf-8")
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"doc_id": [5], "body": ["parquet body"], "id": ["no"]}), p)
    s = run(tmp_path / "idx", j, c, p, id_field="doc_id", text_field="body")
    assert (s.scanned, s.skipped) == (3, 0)
    assert_index_holds(tmp_path / "idx", {"j1": "json body", "c1": "csv body", "5": "parquet body"})


# -- bad records: skipped, counted, named -------------------------------------------------------------

def test_malformed_json_line_is_skipped_counted_and_named(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"ok"}\n{"id":"b","text":\n[1,2]\n"str"\n{"id":"c","text":"fine"}\n')
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (2, 3)
    assert "not valid JSON" in warnings_about(s, f"{src}:2:")[0]
    assert "expected a JSON object" in warnings_about(s, f"{src}:3:")[0]
    assert "expected a JSON object" in warnings_about(s, f"{src}:4:")[0]
    assert_index_holds(tmp_path / "idx", {"a": "ok", "c": "fine"})


@pytest.mark.parametrize(("row", "reason"), [
    ({"text": "no id"}, "no 'id' field"),
    ({"id": "x"}, "no 'text' field"),
    ({"id": "x", "text": 42}, "'text' must be a string, got int"),
    ({"id": "x", "text": ["a"]}, "'text' must be a string, got list"),
    ({"id": "x", "text": None}, "'text' must be a string, got NoneType"),
    ({"id": "x", "text": "   \n\t"}, "empty text"),
    ({"id": "x", "text": ""}, "empty text"),
    ({"id": "", "text": "t"}, "'id' must be a non-empty string or an integer"),
    ({"id": None, "text": "t"}, "'id' must be a non-empty string or an integer"),
    ({"id": 1.5, "text": "t"}, "'id' must be a non-empty string or an integer, got float"),
    ({"id": True, "text": "t"}, "'id' must be a non-empty string or an integer, got bool"),
])
def test_bad_record_is_skipped_with_reason_and_line(tmp_path: Path, row: dict[str, object],
                                                    reason: str) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"id": "good", "text": "good text"}, row])
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped) == (1, 1)
    assert len(s.warnings) == 1
    assert s.warnings[0].startswith(f"{src}:2: skipped")
    assert reason in s.warnings[0]
    assert_index_holds(tmp_path / "idx", {"good": "good text"})


def test_duplicate_id_inside_one_source(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "first"}, {"id": "b", "text": "b"},
                                             {"id": "a", "text": "second"}])
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.skipped, s.duplicates) == (2, 1, 1)
    w = warnings_about(s, "duplicate id 'a'")
    assert len(w) == 1
    assert w[0].startswith(f"{src}:3:") and f"first seen at {src}:1" in w[0]
    assert_index_holds(tmp_path / "idx", {"a": "first", "b": "b"})


def test_duplicate_id_inside_one_source_across_scan_batches(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "first"}, {"id": "b", "text": "b"},
                                             {"id": "c", "text": "c"}, {"id": "a", "text": "second"}])
    s = run(tmp_path / "idx", src, settings=indexer.Settings(scan_batch=2))
    assert (s.scanned, s.duplicates) == (3, 1)
    w = warnings_about(s, "duplicate id 'a'")
    assert w[0].startswith(f"{src}:4:") and f"first seen at {src}:1" in w[0]
    assert_index_holds(tmp_path / "idx", {"a": "first", "b": "b", "c": "c"})


def test_duplicate_id_across_sources_names_both_places(tmp_path: Path) -> None:
    one = write_jsonl(tmp_path / "one.jsonl", [{"id": "x", "text": "from one"}])
    two = tmp_path / "two.csv"
    two.write_text("id,text\ny,other\nx,from two\n", encoding="utf-8")
    s = run(tmp_path / "idx", one, two)
    assert (s.scanned, s.skipped, s.duplicates) == (2, 1, 1)
    w = warnings_about(s, "duplicate id 'x'")
    assert len(w) == 1
    assert w[0].startswith(f"{two}:3:") and f"first seen at {one}:1" in w[0] and "first is kept" in w[0]
    assert_index_holds(tmp_path / "idx", {"x": "from one", "y": "other"})


# -- sources that cannot be read: stop before anything is written -------------------------------------

def _refused(tmp_path: Path, *paths: Path | str, match: str) -> SourceError:
    with pytest.raises(SourceError, match=match) as info:
        run(tmp_path / "idx", *paths)
    assert not (tmp_path / "idx").exists(), "nothing may be written for an unreadable source"
    assert info.value.exit_code == 2
    return info.value


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_unreadable_file_stops_before_writing(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "a"}])
    bad = write_jsonl(tmp_path / "locked.jsonl", [{"id": "b", "text": "b"}])
    bad.chmod(0)
    try:
        err = _refused(tmp_path, good, bad, match="cannot be read")
        assert str(bad) in str(err)
    finally:
        bad.chmod(0o644)


def _deny(monkeypatch: pytest.MonkeyPatch, denied: Path) -> None:
    """Make `denied` unreadable even for root: opening or listing it raises PermissionError."""
    real_open, real_scandir = Path.open, os.scandir

    def fake_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == denied:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    def fake_scandir(path: Any = ".") -> Any:
        if Path(os.fsdecode(path)) == denied:
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real_scandir(path)

    monkeypatch.setattr(Path, "open", fake_open)
    monkeypatch.setattr(os, "scandir", fake_scandir)


def test_unreadable_file_stops_before_writing_even_as_root(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "a"}])
    bad = write_jsonl(tmp_path / "locked.csv", [{"id": "b", "text": "b"}])
    _deny(monkeypatch, bad)
    err = _refused(tmp_path, good, bad, match="cannot be read: Permission denied")
    assert str(bad) in str(err)


def test_unreadable_directory_stops_before_writing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "a"}])
    root = tmp_path / "dir"
    root.mkdir()
    (root / "f.txt").write_text("f", encoding="utf-8")
    _deny(monkeypatch, root)
    err = _refused(tmp_path, good, root, match="cannot be read: Permission denied")
    assert str(root) in str(err)


def test_unreadable_subdirectory_stops_the_scan_and_deletes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "dir"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "one.txt").write_text("one", encoding="utf-8")
    (root / "b" / "two.txt").write_text("two", encoding="utf-8")
    run(tmp_path / "idx", root)
    _deny(monkeypatch, root / "b")
    with pytest.raises(SourceError, match="cannot be listed") as info:
        run(tmp_path / "idx", root, delete_missing=True)
    assert str(root / "b") in str(info.value)
    monkeypatch.undo()
    with Index.open(tmp_path / "idx") as idx:
        assert idx.status()["deleted"] == 0
    assert_index_holds(tmp_path / "idx", {"a/one.txt": "one", "b/two.txt": "two"})


def test_missing_path_stops_before_writing(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "a"}])
    err = _refused(tmp_path, good, tmp_path / "nope.jsonl", match="does not exist")
    assert str(tmp_path / "nope.jsonl") in str(err)


def test_missing_path_leaves_an_existing_index_untouched(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", [{"id": "a", "text": "a"}])
    run(tmp_path / "idx", good)
    with Index.open(tmp_path / "idx") as idx:
        before = idx.status()
    with pytest.raises(SourceError):
        run(tmp_path / "idx", good, tmp_path / "gone.csv", delete_missing=True)
    with Index.open(tmp_path / "idx") as idx:
        assert idx.status() == before  # no run recorded, nothing deleted


def test_unknown_extension_lists_the_understood_ones(tmp_path: Path) -> None:
    weird = tmp_path / "notes.xml"
    weird.write_text("<a>b</a>\n", encoding="utf-8")
    err = _refused(tmp_path, weird, match="unknown format")
    assert str(weird) in str(err)
    for ext in (".jsonl", ".csv", ".parquet", ".txt", ".md", ".rst", "directory"):
        assert ext in str(err)


@pytest.mark.parametrize("name", ["notes.md", "README.txt", "guide.rst"])
def test_a_single_text_file_is_one_document_named_by_its_file_name(tmp_path: Path, name: str) -> None:
    src = tmp_path / "sub" / name
    src.parent.mkdir()
    src.write_text("# Notes\n\nSome text, with a second paragraph.\n", encoding="utf-8")
    s = run(tmp_path / "idx", src)
    assert (s.scanned, s.new, s.skipped) == (1, 1, 0)
    assert_index_holds(tmp_path / "idx", {name: src.read_text(encoding="utf-8")})


def test_an_empty_single_text_file_is_skipped_with_its_name(tmp_path: Path) -> None:
    src = tmp_path / "empty.md"
    src.write_text("  \n", encoding="utf-8")
    assert [(i.where, i.reason) for i in read_all(str(src))] == [  # type: ignore[union-attr]
        (str(src), "empty text: nothing to embed")]


# -- which files of a directory are documents ------------------------------------------------------------

def _tree(root: Path, files: dict[str, bytes | str]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str):
            path.write_text(data, encoding="utf-8")
        else:
            path.write_bytes(data)
    return root


def _ids(spec: Path, **folder: Any) -> list[str]:
    from indexer.sources import FolderFilter

    return sorted(i.id for i in open_source(str(spec), folder=FolderFilter(**folder))
                  if isinstance(i, Record))


def test_git_and_hidden_files_are_left_out_by_default(tmp_path: Path) -> None:
    root = _tree(tmp_path / "repo", {
        "README.md": "readme", ".git/HEAD": "ref: refs/heads/main", ".git/objects/ab/cd": "blob",
        ".env": "SECRET=1", ".github/workflows/ci.yml": "on: push", "src/.cache/x.txt": "cached",
        "src/a.py": "print(1)"})
    assert _ids(root) == ["README.md", "src/a.py"]
    # --hidden takes hidden files and directories, but never .git/
    assert _ids(root, hidden=True) == [".env", ".github/workflows/ci.yml", "README.md", "src/.cache/x.txt",
                                       "src/a.py"]


def test_include_and_exclude_match_the_relative_path_gitignore_style(tmp_path: Path) -> None:
    root = _tree(tmp_path / "docs", {
        "top.md": "t", "a/b.md": "b", "a/c.txt": "c", "build/out.md": "o", "a/build/deep.md": "d",
        "notes/top.md": "n"})
    assert _ids(root, include=["*.md"]) == ["a/b.md", "a/build/deep.md", "build/out.md", "notes/top.md",
                                            "top.md"]
    assert _ids(root, include=["*.md"], exclude=["build/"]) == ["a/b.md", "notes/top.md", "top.md"]
    assert _ids(root, exclude=["/top.md", "*.txt"]) == ["a/b.md", "a/build/deep.md", "build/out.md",
                                                        "notes/top.md"]
    assert _ids(root, include=["a/**"], exclude=["**/build/**"]) == ["a/b.md", "a/c.txt"]


def test_the_index_inside_the_source_directory_is_never_read(tmp_path: Path) -> None:
    root = _tree(tmp_path / "notes", {"a.txt": "alpha", "b.txt": "beta"})
    s1 = run(root / ".." / "notes" / "idx", root)  # the same directory, spelled another way
    s2 = run(root / "idx", root)
    assert (s1.scanned, s2.scanned, s2.new, s2.unchanged) == (2, 2, 0, 2)
    assert_index_holds(root / "idx", {"a.txt": "alpha", "b.txt": "beta"})


def test_binary_files_are_skipped_with_one_counted_warning(tmp_path: Path) -> None:
    root = _tree(tmp_path / "mixed", {
        "a.txt": "text", "img/x.png": b"\x89PNG\r\n\x1a\n\x00\x00", "img/y.png": b"\x00\xff",
        "lib.so": b"\x7fELF\x00\xc3", "latin1.txt": "caf\xe9".encode("latin-1")})
    s = run(tmp_path / "idx", root)
    assert (s.scanned, s.skipped) == (1, 4)
    # Text in another encoding keeps a warning of its own: the user can re-save it as UTF-8.
    assert s.warnings == [f"{root / 'latin1.txt'}: skipped: not valid UTF-8 at byte 3",
                          f"skipped 3 binary file(s), e.g. {root / 'lib.so'}; leave them out with "
                          "--exclude to silence this"]
    assert_index_holds(tmp_path / "idx", {"a.txt": "text"})


def test_no_source_given(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no source"):
        open_sources([])


def test_csv_without_the_named_columns(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_text("key,body\na,b\n", encoding="utf-8")
    err = _refused(tmp_path, src, match="no column 'id', 'text'")
    assert str(src) in str(err) and "key, body" in str(err) and "--id-field" in str(err)


def test_empty_csv_has_no_header(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_bytes(b"")
    err = _refused(tmp_path, src, match="empty")
    assert str(src) in str(err)


@pytest.mark.parametrize(("columns", "bad"), [
    ({"id": pa.array([1.5]), "text": pa.array(["x"])}, "'id'"),
    ({"id": pa.array(["a"]), "text": pa.array([3])}, "'text'"),
    ({"id": pa.array(["a"]), "text": pa.array([b"bytes"])}, "'text'"),
    ({"id": pa.array(["a"]), "body": pa.array(["x"])}, "no column 'text'"),
])
def test_parquet_with_wrong_column_types_is_refused_before_writing(
        tmp_path: Path, columns: dict[str, pa.Array], bad: str) -> None:
    src = tmp_path / "d.parquet"
    pq.write_table(pa.table(columns), src)
    err = _refused(tmp_path, src, match=bad)
    assert str(src) in str(err)


def test_not_a_parquet_file(tmp_path: Path) -> None:
    src = tmp_path / "d.parquet"
    src.write_bytes(b"this is not parquet at all")
    _refused(tmp_path, src, match="not a readable Parquet file")


# -- a source that breaks off midway ------------------------------------------------------------------

def _truncated_gz(path: Path, n: int) -> Path:
    whole = gzip.compress(b"".join(orjson.dumps({"id": f"g{i}", "text": f"gz text {i}"}) + b"\n"
                                   for i in range(n)))
    path.write_bytes(whole[: len(whole) * 2 // 3])
    return path


def test_truncated_gz_reads_lines_before_and_deletes_nothing(tmp_path: Path) -> None:
    old = write_jsonl(tmp_path / "old.jsonl", [{"id": "keep1", "text": "k1"}, {"id": "keep2", "text": "k2"}])
    run(tmp_path / "idx", old)
    gz = _truncated_gz(tmp_path / "t.jsonl.gz", 3000)
    with pytest.raises(SourceError) as info:
        run(tmp_path / "idx", gz, delete_missing=True)
    msg = str(info.value)
    assert str(gz) in msg and "broke off after line" in msg and "no document was deleted" in msg
    n_read = int(msg.split("broke off after line ")[1].split(":")[0])
    assert 0 < n_read < 3000
    with Index.open(tmp_path / "idx") as idx:
        st = idx.status()
    # Nothing deleted; the lines read before the break were scanned (pending, embedded next time).
    assert st["deleted"] == 0
    assert st["documents"] == 2 + n_read
    assert st["pending"] == n_read
    assert sorted(served(tmp_path / "idx")) == ["keep1", "keep2"]


def test_truncated_gz_reader_raises_source_error_after_good_lines(tmp_path: Path) -> None:
    gz = _truncated_gz(tmp_path / "t.jsonl.gz", 3000)
    got: list[Record | Skip] = []
    with pytest.raises(SourceError, match=str(gz).replace(".", r"\.")):
        for item in open_source(str(gz)):
            got.append(item)
    assert got and all(isinstance(i, Record) for i in got)
    assert [i.id for i in got if isinstance(i, Record)] == [f"g{i}" for i in range(len(got))]
