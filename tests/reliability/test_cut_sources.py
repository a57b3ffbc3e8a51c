"""Sources that end early never delete documents (issue 10, items 4, 10 and 13).

`--delete-missing` decides that a document is gone because a source did not hold it, so it may only
act on a source read whole. A JSONL file cut mid-record (`head -c`), a producer killed mid-stream, an
empty stdin (`< /dev/null`), a CSV cut inside a quoted field or mid-row: each used to exit 0 after
deleting what it did not reach. Now the records read are synced, nothing is deleted, a warning names
the file and line, and the sync exits 2 when `--delete-missing` was asked. Everything runs for real:
the CLI in a child process where stdin matters, CliRunner elsewhere, real files, the fake model.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.sources import Skip, open_source

from helpers import invoke

SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}


def indexer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "indexer", *args]


def test_sync_from_a_closed_stdin_exits_2_and_creates_nothing(tmp_path: Path) -> None:
    index = tmp_path / "idx"
    # `<&-`: the child starts with file descriptor 0 closed, so Python's sys.stdin is None.
    p = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh",
                        *indexer_cmd("sync", "-", "--index", str(index), "--model", "fake:8")],
                       env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "stdin is closed" in p.stderr and "Traceback" not in p.stderr
    assert not index.exists()


# -- helpers -----------------------------------------------------------------------------------------

MODEL = "fake:8"
FAKE = FakeEmbedder(8)


def jsonl(docs: dict[str, str]) -> bytes:
    return b"".join(orjson.dumps({"id": k, "text": v}) + b"\n" for k, v in docs.items())


def no_traceback(r: Result) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


def state(index: Path) -> tuple[dict[str, np.ndarray], indexer.Status]:
    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        assert idx.verify().ok
        return dict(zip(list(ids), np.asarray(vecs), strict=True)), idx.status()


V1 = {f"d{i:03d}": f"first version of document {i}" for i in range(200)}
V2 = {k: v.replace("first", "second") for k, v in V1.items()}


@pytest.fixture
def index(tmp_path: Path) -> Path:
    src = tmp_path / "v1.jsonl"
    src.write_bytes(jsonl(V1))
    r = invoke("sync", str(src), "--index", str(tmp_path / "idx"), "--model", MODEL, "--quiet")
    assert r.exit_code == 0, r.output
    return tmp_path / "idx"


def assert_synced_nothing_deleted(index: Path, read: dict[str, str]) -> None:
    """Every document of V1 is still live; those read from the cut source serve their new text."""
    served, st = state(index)
    assert st["deleted"] == 0 and st["pending"] == 0 and set(served) == set(V1)
    for doc_id, vector in served.items():
        np.testing.assert_array_equal(vector, FAKE.embed([read.get(doc_id, V1[doc_id])])[0])


def cut_mid_record(data: bytes, fraction: float = 0.5) -> tuple[bytes, int]:
    """`head -c`: the bytes up to a point inside a record; and the line number of that partial line."""
    at = int(len(data) * fraction)
    while data[at - 1:at] in (b"\n", b"}", b'"'):  # inside a record, not on a boundary
        at += 1
    return data[:at], data[:at].count(b"\n") + 1


def read_part(data: bytes) -> dict[str, str]:
    whole = [orjson.loads(line) for line in data.split(b"\n")[:-1]]
    return {d["id"]: d["text"] for d in whole}


# -- JSONL --------------------------------------------------------------------------------------------

def test_jsonl_cut_mid_record_deletes_nothing_and_exits_2(tmp_path: Path, index: Path) -> None:
    cut, line = cut_mid_record(jsonl(V2))
    src = tmp_path / "cut.jsonl"
    src.write_bytes(cut)
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing", "--json")
    no_traceback(r)
    assert r.exit_code == 2, r.output
    assert f"{src}:{line}: skipped: not valid JSON" in r.stderr  # the warning names file and line
    assert "--delete-missing deleted nothing" in r.stderr and f"{src}:{line}" in r.stderr.splitlines()[-1]
    summary = json.loads(r.stdout)  # the summary is still printed: the documents read were synced
    assert summary["deleted"] == 0 and summary["embedded"] == len(read_part(cut)) > 0
    assert summary["incomplete_sources"][0].startswith(f"{src}:{line}: not valid JSON")
    assert_synced_nothing_deleted(index, read_part(cut))
    with indexer.open(index) as idx:
        assert idx.status()["last_run"]["state"] == "finished"  # type: ignore[index]

    # Without --delete-missing, a cut source is a warning, not an error.
    r = invoke("sync", str(src), "--index", str(index))
    assert r.exit_code == 0 and f"{src}:{line}: skipped" in r.stderr, r.output


@pytest.mark.parametrize("last", [
    b'{"id": "x", "text": "cut in a str',  # no line end, not JSON
    b'{"id": "x", "text": "a"',  # no line end, the closing brace missing
    b'{"id": "x", "text": "\xff\xfe bad bytes"}\n',  # ends in a decode error, even with a line end
    b"12",  # a cut number: valid JSON, not an object, no line end
    b'{"id": "x", "text": "bad last line"\n\n  \n',  # a bad last line, blank lines after it
])
def test_jsonl_ending_in_a_partial_or_undecodable_line_is_cut(tmp_path: Path, index: Path,
                                                              last: bytes) -> None:
    src = tmp_path / "cut.jsonl"
    part = dict(list(V2.items())[:50])
    src.write_bytes(jsonl(part) + last)
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing")
    no_traceback(r)
    assert r.exit_code == 2 and f"{src}:51" in r.stderr, r.output
    assert_synced_nothing_deleted(index, part)


@pytest.mark.parametrize("tail", [
    b'{"id": "d000", "text": "whole, no line end"}',  # a whole object needs no line end
    b'not json, but the file goes on\n{"id": "d000", "text": "whole, no line end"}\n',  # a bad middle line
])
def test_jsonl_whole_last_record_deletes(tmp_path: Path, index: Path, tail: bytes) -> None:
    src = tmp_path / "few.jsonl"
    src.write_bytes(jsonl({"d001": V1["d001"]}) + tail)
    # --max-delete 1: this whole source really lost 198 of 200 documents (the guard is test_cli's)
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing", "--max-delete", "1")
    assert r.exit_code == 0, r.output
    served, st = state(index)
    assert st["deleted"] == 198 and set(served) == {"d000", "d001"}


def test_stdin_cut_by_a_killed_producer(tmp_path: Path, index: Path) -> None:
    """The producer writes some records and half of one, then is killed (SIGKILL)."""
    cut, line = cut_mid_record(jsonl(V2), 0.3)
    producer = subprocess.Popen(
        [sys.executable, "-c", "import os, signal, sys; sys.stdout.buffer.write(sys.stdin.buffer.read()); "
                               "sys.stdout.flush(); os.kill(os.getpid(), signal.SIGKILL)"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    consumer = subprocess.Popen(indexer_cmd("sync", "-", "--index", str(index), "--delete-missing"),
                                stdin=producer.stdout, stderr=subprocess.PIPE, env=SUBPROCESS_ENV)
    assert producer.stdin is not None and producer.stdout is not None
    producer.stdout.close()  # the consumer holds the pipe now
    producer.stdin.write(cut)
    producer.stdin.close()
    assert producer.wait(60) == -signal.SIGKILL
    _, err = consumer.communicate(timeout=120)
    assert consumer.returncode == 2, err.decode()
    assert f"<stdin>:{line}" in err.decode() and b"Traceback" not in err
    assert_synced_nothing_deleted(index, read_part(cut))


def test_empty_stdin_deletes_nothing(tmp_path: Path, index: Path) -> None:
    p = subprocess.run(indexer_cmd("sync", "-", "--index", str(index), "--delete-missing"),
                       stdin=subprocess.DEVNULL, env=SUBPROCESS_ENV, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert "<stdin>: no record was read" in p.stderr and "Traceback" not in p.stderr
    assert_synced_nothing_deleted(index, {})


def test_gz_whose_content_is_cut_mid_record(tmp_path: Path, index: Path) -> None:
    cut, line = cut_mid_record(jsonl(V2), 0.7)
    src = tmp_path / "cut.jsonl.gz"
    src.write_bytes(gzip.compress(cut))  # a whole gzip stream of a cut file
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing")
    no_traceback(r)
    assert r.exit_code == 2 and f"{src}:{line}" in r.stderr, r.output
    assert_synced_nothing_deleted(index, read_part(cut))


def test_one_cut_source_of_several_deletes_nothing(tmp_path: Path, index: Path) -> None:
    whole, cut = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    whole.write_bytes(jsonl({"d000": V2["d000"]}))
    cut.write_bytes(jsonl({"d001": V2["d001"]}) + b'{"id": "d002", "te')
    r = invoke("sync", str(whole), str(cut), "--index", str(index), "--delete-missing")
    assert r.exit_code == 2 and f"{cut}:2" in r.stderr, r.output
    assert_synced_nothing_deleted(index, {"d000": V2["d000"], "d001": V2["d001"]})
    r = invoke("sync", str(whole), str(cut), "--index", str(index), "--delete-missing", "--dry-run", "--json")
    assert r.exit_code == 2 and json.loads(r.stdout)["deleted"] == 0, r.output


def test_python_api_raises_with_the_summary(tmp_path: Path, index: Path) -> None:
    with pytest.raises(indexer.IncompleteSourceError, match="no record was read") as info:
        indexer.sync(index, [], indexer.SyncOptions(delete_missing=True))
    summary = info.value.summary
    assert isinstance(summary, indexer.SyncSummary) and summary.deleted == 0
    assert summary.incomplete_sources == ["<python>: no record was read, so the source is empty or cut "
                                          "before its first record"]
    assert_synced_nothing_deleted(index, {})


# -- CSV, Parquet, directories ---------------------------------------------------------------------

def csv_bytes(docs: dict[str, str]) -> bytes:
    out = io.StringIO(newline="")
    w = csv.writer(out)
    w.writerow(["id", "text"])
    w.writerows(docs.items())
    return out.getvalue().encode("utf-8")


def test_csv_unterminated_quote_is_a_cut_source(tmp_path: Path, index: Path) -> None:
    part = dict(list(V2.items())[:30])
    src = tmp_path / "cut.csv"
    # Row 32 opens a quote that never closes: every line after it would be read as one text.
    src.write_bytes(csv_bytes(part) + b'd030,"an unterminated quote\nd031,x\nd032,y\n')
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing", "--json")
    no_traceback(r)
    assert r.exit_code == 2, r.output
    assert f"{src}:32: skipped: a quoted field opened on this row is never closed, so lines 32-34" in r.stderr
    assert_synced_nothing_deleted(index, part)
    assert json.loads(r.stdout)["skipped"] == 1


def test_csv_last_row_without_line_end_is_not_read_in_part(tmp_path: Path, index: Path) -> None:
    part = dict(list(V2.items())[:30])
    src = tmp_path / "cut.csv"
    src.write_bytes(csv_bytes(part) + b"d030,a text cut mid-wo")  # `head -c` of a CSV
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing")
    assert r.exit_code == 2 and f"{src}:32: skipped: the last row has no line end" in r.stderr, r.output
    assert_synced_nothing_deleted(index, part)  # d030 keeps its old text, never "a text cut mid-wo"


def test_csv_invalid_utf8_skips_its_row_with_the_right_line(tmp_path: Path, index: Path) -> None:
    docs = dict(list(V2.items())[:100])
    lines = csv_bytes(docs).split(b"\r\n")
    lines[60] = lines[60].replace(b"second", b"sec\xffond")  # row 60: line 61 of the file
    src = tmp_path / "bad.csv"
    src.write_bytes(b"\r\n".join(lines))
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing", "--json")
    no_traceback(r)
    assert r.exit_code == 0, r.output
    assert f"{src}:61: skipped: not valid UTF-8 (byte 0xff at column" in r.stderr
    summary = json.loads(r.stdout)
    assert (summary["skipped"], summary["embedded"], summary["deleted"]) == (1, 99, 100)
    served, st = state(index)
    bad_id = lines[60].split(b",")[0].decode()
    assert st["pending"] == 0 and set(served) == set(docs)  # the bad row's document is kept, not deleted
    for doc_id, vector in served.items():
        text = V1[doc_id] if doc_id == bad_id else docs[doc_id]
        np.testing.assert_array_equal(vector, FAKE.embed([text])[0])


def test_csv_malformed_row_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_bytes(b'id,text\na,one\nb,"two" and more\nc,three\n')
    items = list(open_source(str(src)))
    assert [type(i).__name__ for i in items] == ["Record", "Skip", "Record"]
    assert isinstance(items[1], Skip) and items[1].where == f"{src}:3" and "malformed CSV" in items[1].reason
    assert not items[1].cut


@pytest.mark.parametrize("kind", ["parquet", "csv", "dir"])
def test_source_with_no_record_deletes_nothing(tmp_path: Path, index: Path, kind: str) -> None:
    if kind == "parquet":
        src = tmp_path / "e.parquet"
        pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), src)
    elif kind == "csv":
        src = tmp_path / "h.csv"
        src.write_bytes(b"id,text\n")
    else:
        src = tmp_path / "empty"
        src.mkdir()
    r = invoke("sync", str(src), "--index", str(index), "--delete-missing")
    no_traceback(r)
    assert r.exit_code == 2 and f"{src}: no record was read" in r.stderr, r.output
    assert_synced_nothing_deleted(index, {})
