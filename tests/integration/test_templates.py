"""--template: the embedded text composed from fields of each record (JSONL keys, CSV and Parquet
columns, Python dicts). The content hash covers the composed text; a record missing a field is skipped
with a warning naming where it was; the template is bound to the index. The fake model (its vector is
a hash of the exact text it was given) shows which text was embedded."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import indexer
from indexer import IndexerError
from indexer.settings import Settings
from indexer.sources import Template

from helpers import fake_vector, invoke, served, write_jsonl

SETTINGS = Settings(chunk_rows=8)
TEMPLATE = "{title}: {text}"


def assert_embedded(index_dir: Path, expected: dict[str, str]) -> None:
    got = served(index_dir)
    assert sorted(got) == sorted(expected)
    for doc_id, text in expected.items():
        assert got[doc_id].tobytes() == fake_vector(text).tobytes(), doc_id


@pytest.mark.parametrize("bad", ["{title", "title}", "{a.b}", "{a[0]}", "{a!r}", "{a:>9}", "{}", "no fields"])
def test_a_malformed_template_is_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    with pytest.raises(IndexerError, match="--template"):
        Template.parse(bad)
    src = write_jsonl(tmp_path / "docs.jsonl", {"a": "alpha"})
    r = invoke("sync", str(src), "--index", str(tmp_path / "ix"), "--model", "fake:16", "--template", bad)
    assert r.exit_code == 1 and "--template" in r.stderr, r.output
    assert not (tmp_path / "ix").exists()


def test_template_fields_and_literal_braces() -> None:
    t = Template.parse("{{{title}}} {year}: {text} ({title})")
    assert t.fields == ("title", "year", "text")
    assert t.compose({"title": "T", "year": 2020, "text": "body"}) == "{T} 2020: body (T)"
    assert t.compose({"title": "T", "year": 1.5, "text": "x"}) == "{T} 1.5: x (T)"
    assert t.compose({"title": "T", "text": "x"}) == ("year", "no 'year' field (the --template needs it)")
    assert t.compose({"title": ["T"], "year": 1, "text": "x"})[0] == "title"
    assert t.compose({"title": True, "year": 1, "text": "x"})[0] == "title"  # a bool is not a number


def test_jsonl_changed_title_reembeds_exactly_that_document(tmp_path: Path) -> None:
    rows = [{"id": f"d{i}", "title": f"T{i}", "text": f"body {i}"} for i in range(10)]
    src = write_jsonl(tmp_path / "docs.jsonl", rows)
    ix = str(tmp_path / "ix")
    r = invoke("sync", str(src), "--index", ix, "--model", "fake:16", "--template", TEMPLATE, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["embedded"] == 10
    assert_embedded(tmp_path / "ix", {f"d{i}": f"T{i}: body {i}" for i in range(10)})
    assert 'template = "{title}: {text}"' in (tmp_path / "ix" / "index.toml").read_text(encoding="utf-8")

    rows[3]["title"] = "A new title"
    write_jsonl(src, rows)
    r = invoke("sync", str(src), "--index", ix, "--json")  # the index's own template
    summary = json.loads(r.stdout)
    assert (summary["embedded"], summary["changed"], summary["unchanged"]) == (1, 1, 9)
    assert served(tmp_path / "ix")["d3"].tobytes() == fake_vector("A new title: body 3").tobytes()

    r = invoke("sync", str(src), "--index", ix, "--template", "{text}")
    assert r.exit_code == 3 and "template: index has '{title}: {text}'" in r.stderr, r.output


def test_records_missing_a_field_are_skipped_with_file_and_line(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "docs.jsonl", [
        {"id": "a", "title": "A", "text": "alpha"},
        {"id": "b", "text": "no title"},
        {"id": "c", "title": ["not", "text"], "text": "list title"},
        {"id": "d", "title": 7, "text": "numbered"},
        {"id": "e", "title": None, "text": "null title"},
    ])
    ix = tmp_path / "ix"
    r = invoke("sync", str(src), "--index", str(ix), "--model", "fake:16", "--template", TEMPLATE,
               "--delete-missing")
    assert r.exit_code == 0, r.output
    assert f"{src}:2: skipped: no 'title' field (the --template needs it)" in r.stderr
    assert f"{src}:3: skipped: 'title' must be a string or a number for the --template, got list" in r.stderr
    assert f"{src}:5: skipped: no 'title' field" in r.stderr
    assert_embedded(ix, {"a": "A: alpha", "d": "7: numbered"})
    # a skipped record whose id is known is not "missing": an earlier vector of it is not deleted
    write_jsonl(src, [{"id": "a", "text": "alpha"}, {"id": "d", "title": 7, "text": "numbered"}])
    r = invoke("sync", str(src), "--index", str(ix), "--delete-missing", "--json")
    assert json.loads(r.stdout)["deleted"] == 0
    assert sorted(served(ix)) == ["a", "d"]


def test_csv_and_parquet_columns(tmp_path: Path) -> None:
    csv_file = tmp_path / "docs.csv"
    csv_file.write_text("id,title,text,extra\nc1,First,one,x\nc2,,two,y\n", encoding="utf-8")
    table = pa.table({"id": ["p1", "p2", "p3"], "title": ["P", None, "R"], "year": [2001, 2002, 2003],
                      "text": ["pa", "pb", "pc"]})
    pq.write_table(table, tmp_path / "docs.parquet")
    ix = tmp_path / "ix"
    r = invoke("sync", str(csv_file), str(tmp_path / "docs.parquet"), "--index", str(ix), "--model",
               "fake:16", "--template", "{title} ({year}): {text}")
    # the CSV has no year column: the whole file is refused at start, nothing written
    assert r.exit_code == 2 and "header has no column 'year'" in r.stderr and "--template" in r.stderr
    assert not ix.exists()
    r = invoke("sync", str(csv_file), str(tmp_path / "docs.parquet"), "--index", str(ix), "--model",
               "fake:16", "--template", TEMPLATE)
    assert r.exit_code == 0, r.output
    assert f"{tmp_path / 'docs.parquet'} row 2: skipped: no 'title' field" in r.stderr
    # an empty CSV cell is an empty string, not a missing field
    assert_embedded(ix, {"c1": "First: one", "c2": ": two", "p1": "P: pa", "p3": "R: pc"})
    pq.write_table(table.drop_columns(["title"]), tmp_path / "untitled.parquet")
    r = invoke("sync", str(tmp_path / "untitled.parquet"), "--index", str(ix))
    assert r.exit_code == 2 and "no column 'title'" in r.stderr


def test_python_dicts_and_text_directories(tmp_path: Path) -> None:
    docs = [{"id": "a", "title": "A", "text": "alpha"}, {"id": "b", "text": "beta"}]
    s = indexer.sync(tmp_path / "ix", docs,
                     indexer.SyncOptions(model="fake:16", template=TEMPLATE, settings=SETTINGS))
    assert (s.embedded, s.skipped) == (1, 1)
    assert "<python> item 2: skipped: no 'title' field" in s.warnings[0]
    assert_embedded(tmp_path / "ix", {"a": "A: alpha"})

    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "one.txt").write_text("hello", encoding="utf-8")
    s = indexer.sync(tmp_path / "dir-ix", paths=[str(tmp_path / "texts")],
                     options=indexer.SyncOptions(model="fake:16", template="{id}\n{text}", settings=SETTINGS))
    assert_embedded(tmp_path / "dir-ix", {"one.txt": "one.txt\nhello"})
    with pytest.raises(indexer.SourceError, match=r"only the fields id .* and text.*'title'"):
        indexer.sync(tmp_path / "dir-ix2", paths=[str(tmp_path / "texts")],
                     options=indexer.SyncOptions(model="fake:16", template=TEMPLATE))
