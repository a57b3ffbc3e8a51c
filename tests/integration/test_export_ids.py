"""`indexer export --ids` writes ids that cannot be misaligned with the rows (issue 10, item 7).

Ids are any non-empty Unicode string, so they may hold line breaks of every kind. Written one a line,
"a\\nb" became two lines and every row after it was paired with the wrong id. The ids file is JSON lines
(one JSON string a line, ASCII): each line is one row, for any line splitter.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import orjson
from click.testing import CliRunner

import indexer
from indexer.cli import cli
from indexer.embedders.fake import FakeEmbedder

# Every character some reader takes for a line end (str.splitlines: \n \r \v \f \x1c-\x1e \x85 \u2028
# \u2029), NUL, and ids that look like JSON themselves.
HOSTILE = ["plain", "line\nfeed", "carriage\rreturn", "crlf\r\nid", "nul\x00id", "ls\u2028id", "ps\u2029id",
           "nel\x85id", "vt\x0bff\x0cfs\x1c", '"quoted"', "\\u2028 as text", "ü日本🙂", "\n", " "]


def test_ids_with_line_breaks_export_one_line_a_row(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"id": i, "text": f"text {n}"}) + b"\n"
                             for n, i in enumerate(HOSTILE)))
    index, out, ids_file = tmp_path / "idx", tmp_path / "v.npy", tmp_path / "ids.jsonl"
    runner = CliRunner()
    r = runner.invoke(cli, ["sync", str(src), "--index", str(index), "--model", "fake:8", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["export", str(index), "--out", str(out), "--ids", str(ids_file)])
    assert r.exit_code == 0, r.output
    matrix = np.load(out)
    raw = ids_file.read_bytes()
    assert raw.isascii()
    lines = raw.decode("ascii").splitlines()  # the most eager splitter there is
    assert len(lines) == len(matrix) == len(HOSTILE)
    ids = [json.loads(line) for line in lines]
    assert sorted(ids) == sorted(HOSTILE)
    assert indexer.read_ids(ids_file) == ids
    text_of = {i: f"text {n}" for n, i in enumerate(HOSTILE)}
    expected = FakeEmbedder(8).embed([text_of[i] for i in ids])
    np.testing.assert_array_equal(matrix, expected)  # row k is the vector of ids[k]
