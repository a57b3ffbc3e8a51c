"""The `indexer` command line, through click's CliRunner: exit codes, stdout/stderr, and the index left."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest
from click.testing import Result

import indexer
from indexer import Index
from indexer.embedders import ModelInfo
from indexer.embedders.fake import FakeEmbedder

from helpers import invoke, served

MODEL = "fake:8"
FAKE = FakeEmbedder(8)
SUMMARY_KEYS = {"scanned", "new", "changed", "unchanged", "deleted", "embedded", "failed", "seconds"}
STATUS_KEYS = {"documents", "pending", "done", "failed", "deleted", "model", "dim", "dtype"}


# -- local helpers ------------------------------------------------------------------------------------


def ok(*args: str, input: bytes | str | None = None) -> Result:
    r = invoke(*args, input=input)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    assert r.exit_code == 0, f"exit {r.exit_code}: {r.output}"
    return r


def no_traceback(r: Result) -> None:
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output and "Traceback" not in r.stderr


def docs(path: Path, items: dict[str, str]) -> Path:
    path.write_bytes(b"".join(orjson.dumps({"id": k, "text": v}) + b"\n" for k, v in items.items()))
    return path


def status_of(index_dir: Path) -> dict[str, object]:
    r = ok("status", str(index_dir), "--json")
    out: dict[str, object] = json.loads(r.stdout)
    return out


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return docs(tmp_path / "docs.jsonl", {f"d{i}": f"document number {i}" for i in range(5)})


@pytest.fixture
def index(tmp_path: Path, corpus: Path) -> Path:
    idx = tmp_path / "idx"
    ok("sync", str(corpus), "--index", str(idx), "--model", MODEL, "--quiet")
    return idx


# -- sync ---------------------------------------------------------------------------------------------

def test_sync_creates_index_and_prints_final_line_on_stderr(tmp_path: Path, corpus: Path) -> None:
    idx = tmp_path / "idx"
    r = ok("sync", str(corpus), "--index", str(idx), "--model", MODEL)
    assert r.stdout == ""
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"synced {idx}: scanned 5 (5 new, 0 changed, 0 unchanged), embedded 5, deleted 0")
    assert Index.exists(idx)
    got = served(idx)
    assert sorted(got) == [f"d{i}" for i in range(5)]
    np.testing.assert_array_equal(got["d3"], FAKE.embed(["document number 3"])[0])
    # A second sync embeds nothing.
    r = ok("sync", str(corpus), "--index", str(idx))
    assert "scanned 5 (0 new, 0 changed, 5 unchanged), embedded 0" in r.stderr


def test_sync_warns_about_skipped_records_on_stderr(tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_bytes(b'{"id":"a","text":"x"}\nnot json\n')
    r = ok("sync", str(src), "--index", str(tmp_path / "idx"), "--model", MODEL)
    assert f"indexer: warning: {src}:2: skipped: not valid JSON" in r.stderr
    assert "skipped 1 input record(s)" in r.stderr


def test_sync_json(tmp_path: Path, corpus: Path) -> None:
    r = ok("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model", MODEL, "--json")
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary.keys() >= SUMMARY_KEYS
    assert (summary["scanned"], summary["new"], summary["embedded"], summary["failed"]) == (5, 5, 5, 0)
    assert isinstance(summary["seconds"], float)


def test_sync_quiet_prints_nothing(tmp_path: Path, corpus: Path) -> None:
    r = ok("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model", MODEL, "--quiet")
    assert r.stderr == "" and r.stdout == ""
    assert status_of(tmp_path / "idx")["done"] == 5


def test_sync_from_stdin(tmp_path: Path) -> None:
    data = b'{"id":"s1","text":"one"}\n{"id":"s2","text":"two"}\n'
    r = ok("sync", "-", "--index", str(tmp_path / "idx"), "--model", MODEL, "--json", input=data)
    assert json.loads(r.stdout)["embedded"] == 2
    assert sorted(served(tmp_path / "idx")) == ["s1", "s2"]


def test_sync_field_options(tmp_path: Path) -> None:
    src = tmp_path / "d.csv"
    src.write_text("key,body\nk1,hello\n", encoding="utf-8")
    ok("sync", str(src), "--index", str(tmp_path / "idx"), "--model", MODEL, "-q",
       "--id-field", "key", "--text-field", "body")
    got = served(tmp_path / "idx")
    np.testing.assert_array_equal(got["k1"], FAKE.embed(["hello"])[0])


def test_dry_run_on_new_index_writes_nothing(tmp_path: Path, corpus: Path) -> None:
    idx = tmp_path / "idx"
    r = ok("sync", str(corpus), "--index", str(idx), "--model", MODEL, "--dry-run", "--json")
    assert not idx.exists()
    s = json.loads(r.stdout)
    assert s["dry_run"] is True and s["new"] == 5 and s["would_embed"] == 5 and s["embedded"] == 0
    assert "dry run" in r.stderr and "nothing was written" in r.stderr


def test_dry_run_on_existing_index_changes_nothing(tmp_path: Path, index: Path) -> None:
    before = status_of(index)
    changed = docs(tmp_path / "changed.jsonl", {"d0": "a new text", "new1": "brand new"})
    r = ok("sync", str(changed), "--index", str(index), "--dry-run", "--delete-missing", "--max-delete", "1",
           "--json")
    s = json.loads(r.stdout)
    assert (s["new"], s["changed"], s["deleted"], s["would_embed"]) == (1, 1, 4, 2)
    assert status_of(index) == before
    np.testing.assert_array_equal(served(index)["d0"], FAKE.embed(["document number 0"])[0])


def test_delete_missing(tmp_path: Path, index: Path) -> None:
    fewer = docs(tmp_path / "fewer.jsonl", {"d0": "document number 0"})
    r = ok("sync", str(fewer), "--index", str(index), "--json")
    assert json.loads(r.stdout)["deleted"] == 0  # kept by default
    r = ok("sync", str(fewer), "--index", str(index), "--delete-missing", "--max-delete", "0.8", "--json")
    assert json.loads(r.stdout)["deleted"] == 4
    assert sorted(served(index)) == ["d0"]
    assert status_of(index)["deleted"] == 4


# -- status -------------------------------------------------------------------------------------------

def test_status_text_and_json(index: Path) -> None:
    r = ok("status", str(index))
    assert "model     fake:8 (dim 8, float32)" in r.stdout
    assert "documents 5: 5 done, 0 pending, 0 failed; 0 deleted" in r.stdout
    st = status_of(index)
    assert st.keys() >= STATUS_KEYS
    assert (st["documents"], st["pending"], st["done"], st["failed"], st["deleted"]) == (5, 0, 5, 0, 0)
    assert (st["model"], st["dim"], st["dtype"]) == (MODEL, 8, "float32")


class _FailsOnBoom:
    """The fake model, except that any text containing BOOM raises: a per-document failure."""

    def __init__(self) -> None:
        self.inner = FakeEmbedder(8)
        self.info: ModelInfo = self.inner.info

    def embed(self, texts: list[str]) -> np.ndarray:
        if any("BOOM" in t for t in texts):
            raise ValueError("this text explodes")
        return self.inner.embed(texts)


def test_failed_documents_status_failed_and_retry(tmp_path: Path) -> None:
    idx = tmp_path / "idx"
    src = docs(tmp_path / "d.jsonl", {"good1": "fine", "bad1": "a BOOM text", "good2": "also fine"})
    s = indexer.sync(idx, paths=[str(src)], embedder=_FailsOnBoom())
    assert (s.embedded, s.failed) == (2, 1)

    st = status_of(idx)
    assert (st["done"], st["failed"], st["pending"]) == (2, 1, 0)
    r = ok("status", str(idx), "--failed")
    assert "failed    bad1: embedding failed: ValueError: this text explodes" in r.stdout
    assert "good1" not in r.stdout.split("last run")[-1]
    r = ok("status", str(idx), "--json", "--failed")
    assert json.loads(r.stdout)["failures"] == [
        {"id": "bad1", "reason": "embedding failed: ValueError: this text explodes"}]

    # A failed document stays failed across plain syncs: it is not re-embedded silently.
    r = ok("sync", str(src), "--index", str(idx), "--json")
    assert json.loads(r.stdout)["embedded"] == 0
    assert status_of(idx)["failed"] == 1

    r = ok("retry", str(idx))
    assert "re-queued 1 failed content(s)" in r.stderr
    st = status_of(idx)
    assert (st["failed"], st["pending"]) == (0, 1)
    r = ok("sync", str(src), "--index", str(idx), "--json")
    assert json.loads(r.stdout)["embedded"] == 1
    st = status_of(idx)
    assert (st["done"], st["failed"], st["pending"]) == (3, 0, 0)
    np.testing.assert_array_equal(served(idx)["bad1"], FAKE.embed(["a BOOM text"])[0])


def test_final_line_names_failures(tmp_path: Path) -> None:
    """The CLI cannot load a failing model; check its final line on a summary with failures."""
    from indexer._cli_text import sync_line

    idx = tmp_path / "idx"
    bad = docs(tmp_path / "bad.jsonl", {"ok": "fine", "bad": "BOOM"})
    s = indexer.sync(idx, paths=[str(bad)], embedder=_FailsOnBoom())
    assert (s.embedded, s.failed) == (1, 1)
    line = sync_line(s, str(idx))
    assert f"embedded 1, deleted 0, 1 FAILED (see `indexer status {idx} --failed`, then `indexer retry`)" \
        in line


# -- verify, export, compact --------------------------------------------------------------------------

def _chunk_file(index: Path, chunk: int = 0) -> Path:
    path = index / "vectors.zarr" / "c" / str(chunk) / "0"
    assert path.is_file()
    return path


def test_verify_clean(index: Path) -> None:
    r = ok("verify", str(index))
    assert "verify: 5 vectors checked, ok" in r.stdout
    r = ok("verify", str(index), "--json")
    assert json.loads(r.stdout)["ok"] is True


def test_verify_reports_a_torn_chunk_and_repair_requeues(index: Path, corpus: Path) -> None:
    chunk = _chunk_file(index)
    with chunk.open("r+b") as f:
        f.truncate(100)
    r = invoke("verify", str(index))
    no_traceback(r)
    assert r.exit_code == 1
    assert "problem: chunk 0 is torn: 5 done vector(s) lost" in r.stdout
    assert "1 problem(s)" in r.stdout

    r = invoke("verify", str(index), "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["ok"] is False

    r = ok("verify", str(index), "--repair")
    assert "re-queued 5" in r.stdout
    st = status_of(index)
    assert (st["pending"], st["done"]) == (5, 0)
    assert served(index) == {}  # a lost vector is no longer served

    # Their texts were dropped when they were first done: they wait, pending, for a sync that reads them.
    other = docs(index.parent / "other.jsonl", {"o1": "unrelated"})
    ok("sync", str(other), "--index", str(index), "-q")
    st = status_of(index)
    assert (st["pending"], st["done"], st["failed"]) == (5, 1, 0)

    ok("sync", str(corpus), "--index", str(index), "-q")
    r = ok("verify", str(index))
    assert "6 vectors checked, ok" in r.stdout
    assert "compact" in r.stdout  # the torn chunk file is now an orphan, noted
    got = served(index)
    np.testing.assert_array_equal(got["d1"], FAKE.embed(["document number 1"])[0])


def test_export(tmp_path: Path, index: Path) -> None:
    out, ids_file = tmp_path / "x.npy", tmp_path / "ids.txt"
    r = ok("export", str(index), "--out", str(out), "--ids", str(ids_file))
    assert f"exported 5 vectors to {out}" in r.stderr
    matrix = np.load(out)
    ids = [json.loads(line) for line in ids_file.read_text(encoding="ascii").splitlines()]
    assert matrix.shape == (5, 8) and matrix.dtype == np.float32
    assert sorted(ids) == [f"d{i}" for i in range(5)]
    for row, doc_id in zip(matrix, ids, strict=True):
        np.testing.assert_array_equal(row, FAKE.embed([f"document number {doc_id[1:]}"])[0])


def test_compact_packs_and_keeps_vectors(tmp_path: Path, index: Path) -> None:
    changed = docs(tmp_path / "v2.jsonl", {f"d{i}": f"document number {i}" for i in range(5)}
                   | {"d0": "rewritten zero"})
    ok("sync", str(changed), "--index", str(index), "-q")
    assert _chunk_file(index, 1)
    r = ok("compact", str(index), "--json")
    report = json.loads(r.stdout)
    assert report["contents_dropped"] == 1  # the old text of d0
    assert report["chunks_packed"] == 2 and report["chunks_written"] == 1
    assert sorted(p.name for p in (index / "vectors.zarr" / "c").iterdir()) == ["2"]
    ok("verify", str(index))
    got = served(index)
    assert sorted(got) == [f"d{i}" for i in range(5)]
    np.testing.assert_array_equal(got["d0"], FAKE.embed(["rewritten zero"])[0])
    np.testing.assert_array_equal(got["d4"], FAKE.embed(["document number 4"])[0])


# -- errors: a one-line message and an exit code, never a traceback -----------------------------------

@pytest.mark.parametrize(("flags", "field"), [
    (["--model", "fake:16"], "model: index has 'fake:8', this sync asked for 'fake:16'"),
    (["--dtype", "float16"], "dtype: index has 'float32', this sync asked for 'float16'"),
])
def test_config_mismatch_exits_3(index: Path, corpus: Path, flags: list[str], field: str) -> None:
    before = status_of(index)
    r = invoke("sync", str(corpus), "--index", str(index), *flags)
    no_traceback(r)
    assert r.exit_code == 3
    assert r.stderr.startswith("indexer: error: ")
    assert field in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 4
    assert r.stdout == ""
    after = status_of(index)
    assert after["last_run"] == before["last_run"]  # refused before the run started


def test_status_of_missing_index_exits_2(tmp_path: Path) -> None:
    r = invoke("status", str(tmp_path / "nowhere"))
    no_traceback(r)
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"indexer: error: no index at {tmp_path / 'nowhere'}: the directory does "
                                f"not exist. Create one with `indexer sync SOURCE --index "
                                f"{tmp_path / 'nowhere'}`")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("command", ["verify", "retry", "compact"])
def test_other_commands_on_missing_index_exit_2(tmp_path: Path, command: str) -> None:
    r = invoke(command, str(tmp_path / "nowhere"))
    no_traceback(r)
    assert r.exit_code == 2 and "no index at" in r.stderr


def test_export_of_missing_index_exits_2(tmp_path: Path) -> None:
    r = invoke("export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npy"))
    no_traceback(r)
    assert r.exit_code == 2 and "no index at" in r.stderr
    assert not (tmp_path / "x.npy").exists()


def test_missing_source_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    r = invoke("sync", str(tmp_path / "absent.jsonl"), "--index", str(tmp_path / "idx"), "--model", MODEL)
    no_traceback(r)
    assert r.exit_code == 2
    assert f"source {tmp_path / 'absent.jsonl'} does not exist" in r.stderr
    assert not (tmp_path / "idx").exists()


def test_bad_fake_model_name_exits_2(tmp_path: Path, corpus: Path) -> None:
    r = invoke("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model", "fake:x")
    no_traceback(r)
    assert r.exit_code == 2 and "fake:384" in r.stderr


def test_truncated_gz_exits_2_with_message(tmp_path: Path, index: Path) -> None:
    whole = gzip.compress(b"".join(orjson.dumps({"id": f"g{i}", "text": f"t{i}"}) + b"\n"
                                   for i in range(2000)))
    gz = tmp_path / "t.jsonl.gz"
    gz.write_bytes(whole[: len(whole) // 2])
    r = invoke("sync", str(gz), "--index", str(index), "--delete-missing")
    no_traceback(r)
    assert r.exit_code == 2
    assert str(gz) in r.stderr and "no document was deleted" in r.stderr
    assert status_of(index)["deleted"] == 0


def test_usage_errors_exit_2(tmp_path: Path, corpus: Path) -> None:
    r = invoke("sync", str(corpus))  # no --index
    assert r.exit_code == 2 and "--index" in r.stderr
    r = invoke("sync", str(corpus), "--index", str(tmp_path / "i"), "--dtype", "int8")
    assert r.exit_code == 2 and "int8" in r.stderr
    assert not (tmp_path / "i").exists()


def test_python_m_indexer_help() -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "indexer", "--help"], capture_output=True, text=True,
                       env=env, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    assert "Usage: python -m indexer" in p.stdout or "Usage: indexer" in p.stdout
    for command in ("sync", "status", "retry", "verify", "export", "compact"):
        assert command in p.stdout


def test_sync_help_names_the_formats() -> None:
    r = ok("sync", "--help")
    assert ".jsonl" in r.stdout and ".parquet" in r.stdout and "stdin" in r.stdout


# -- directory sources (issue 15) -----------------------------------------------------------------------

def test_sync_folder_flags_pick_files_and_skip_the_index_inside(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    for rel, text in {"a.md": "alpha", "b.txt": "beta", "drafts/c.md": "gamma", ".hidden.md": "secret",
                      ".git/HEAD": "ref: refs/heads/main"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    idx = root / "idx"  # inside the source: its own files must never become documents
    r = ok("sync", str(root), "--index", str(idx), "--model", MODEL, "--include", "*.md",
           "--exclude", "drafts/", "--json")
    assert json.loads(r.stdout)["scanned"] == 1 and sorted(served(idx)) == ["a.md"]
    r = ok("sync", str(root), "--index", str(idx), "--hidden", "--json")
    assert json.loads(r.stdout)["new"] == 3
    assert sorted(served(idx)) == [".hidden.md", "a.md", "b.txt", "drafts/c.md"]
    assert "warning" not in r.stderr


def test_sync_a_single_markdown_file_and_an_unknown_format(tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Title\n\nbody\n", encoding="utf-8")
    ok("sync", str(notes), "--index", str(tmp_path / "idx"), "--model", MODEL, "--quiet")
    assert list(served(tmp_path / "idx")) == ["notes.md"]
    weird = tmp_path / "notes.docx"
    weird.write_bytes(b"PK\x03\x04")
    r = invoke("sync", str(weird), "--index", str(tmp_path / "idx2"), "--model", MODEL)
    assert r.exit_code == 2 and "unknown format" in r.stderr and ".md" in r.stderr and ".jsonl" in r.stderr
    assert not (tmp_path / "idx2").exists()


# -- guards (issue 15) ------------------------------------------------------------------------------------

def test_a_source_with_no_usable_record_exits_2_naming_its_fields(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    src.write_bytes(b"".join(orjson.dumps({"doc_id": f"r{i}", "body": "text", "lang": "en"}) + b"\n"
                             for i in range(30)))
    for args, data in (([str(src)], None), (["-"], src.read_bytes())):
        r = invoke("sync", *args, "--index", str(tmp_path / "idx"), "--model", MODEL, input=data)
        no_traceback(r)
        assert r.exit_code == 2, r.output
        assert "fields found: doc_id, body, lang" in r.stderr and "--id-field" in r.stderr
        assert not (tmp_path / "idx").exists()
    # named right, the same file syncs
    r = ok("sync", str(src), "--index", str(tmp_path / "idx"), "--model", MODEL, "--id-field", "doc_id",
           "--text-field", "body", "--json")
    assert json.loads(r.stdout)["scanned"] == 30


def test_delete_missing_refuses_to_delete_more_than_max_delete(tmp_path: Path, index: Path) -> None:
    before = status_of(index)
    only_d0 = docs(tmp_path / "only_d0.jsonl", {"d0": "document number 0"})
    r = invoke("sync", str(only_d0), "--index", str(index), "--delete-missing")
    no_traceback(r)
    assert r.exit_code == 5
    assert "would delete 4 of 5 live documents (80%)" in r.stderr and "--max-delete 1" in r.stderr
    assert (status_of(index)["deleted"], status_of(index)["done"]) == (0, before["done"])
    # 2 of 5 is within the default half; 3 of 5 is not, until allowed
    two_gone = docs(tmp_path / "three.jsonl", {f"d{i}": f"document number {i}" for i in range(3)})
    r = ok("sync", str(two_gone), "--index", str(index), "--delete-missing", "--json")
    assert json.loads(r.stdout)["deleted"] == 2
    one = docs(tmp_path / "one.jsonl", {"d0": "document number 0"})
    assert invoke("sync", str(one), "--index", str(index), "--delete-missing").exit_code == 5
    r = ok("sync", str(one), "--index", str(index), "--delete-missing", "--max-delete", "1", "--json")
    assert json.loads(r.stdout)["deleted"] == 2 and sorted(served(index)) == ["d0"]


def test_dry_run_says_how_many_documents_are_missing_and_lists_them_in_json(tmp_path: Path,
                                                                           index: Path) -> None:
    fewer = docs(tmp_path / "fewer.jsonl", {"d0": "document number 0", "d2": "document number 2"})
    r = ok("sync", str(fewer), "--index", str(index), "--dry-run")
    assert "3 live document(s) missing from the sources would be kept" in r.stderr
    r = ok("sync", str(fewer), "--index", str(index), "--dry-run", "--json")
    s = json.loads(r.stdout)
    assert (s["missing"], s["missing_ids"], s["deleted"]) == (3, ["d1", "d3", "d4"], 0)
    r = ok("sync", str(fewer), "--index", str(index), "--dry-run", "--delete-missing", "--max-delete", "1",
           "--json")
    s = json.loads(r.stdout)
    assert (s["missing"], s["deleted"]) == (3, 3) and "missing from the sources" not in r.stderr
    assert status_of(index)["deleted"] == 0


def test_skipped_records_are_warned_about_once_and_then_summarized(tmp_path: Path) -> None:
    src = tmp_path / "rows.jsonl"
    rows: list[dict[str, object]] = [{"id": "a", "text": "alpha"}, {"id": "b", "text": " "},
                                     {"id": "c", "text": ""}, {"id": "d"}]
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    idx = tmp_path / "idx"
    first = ok("sync", str(src), "--index", str(idx), "--model", MODEL)
    assert first.stderr.count(": skipped: ") == 3 and "reported by an earlier sync" not in first.stderr
    again = ok("sync", str(src), "--index", str(idx), "--json")
    assert ": skipped: " not in again.stderr
    assert "3 more skipped record(s) were reported by an earlier sync" in again.stderr
    assert json.loads(again.stdout)["skipped"] == 3  # still counted
    # a record whose reason changes is reported again; the others stay quiet
    rows[3] = {"id": "d", "text": 5}
    src.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    third = ok("sync", str(src), "--index", str(idx))
    assert third.stderr.count(": skipped: ") == 1
    assert f"{src}:4: skipped: 'text' must be a string" in third.stderr
    assert "2 more skipped record(s) were reported" in third.stderr


def test_dry_run_with_a_model_that_is_not_installed_fails(tmp_path: Path, corpus: Path) -> None:
    r = invoke("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model", "some-org/not-installed",
               "--dry-run")
    no_traceback(r)
    assert r.exit_code == 2 and "would embed" not in r.stderr
    assert "cannot load model 'some-org/not-installed'" in r.stderr and "HF_HUB_OFFLINE is set" in r.stderr
    empty = tmp_path / "empty-model"
    empty.mkdir()
    r = invoke("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model", str(empty), "--dry-run")
    assert r.exit_code == 2 and "holds no model" in r.stderr
    assert not (tmp_path / "idx").exists()


def test_without_hf_hub_offline_a_missing_model_fails_at_once_with_one_probe(
        tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, no_network: list[object],
        caplog: pytest.LogCaptureFixture) -> None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # even if a connection got out: loopback
    attempts = no_network
    for extra in ([], ["--dry-run"]):
        attempts.clear()
        r = invoke("sync", str(corpus), "--index", str(tmp_path / "idx"), "--model",
                   "bogus-org/no-such-model", *extra)
        no_traceback(r)
        assert r.exit_code == 2, r.output
        assert "the Hugging Face hub (127.0.0.1:9) cannot be reached" in r.stderr
        assert "HF_HUB_OFFLINE=1" in r.stderr
        assert attempts == [("127.0.0.1", 9)]  # one probe, nothing else
        assert "Retrying" not in r.output + caplog.text
        assert not (tmp_path / "idx").exists()


# -- messages and help (issue 15) --------------------------------------------------------------------------

def test_compact_prints_a_sentence_and_json_with_json(tmp_path: Path, index: Path) -> None:
    changed = docs(tmp_path / "v2.jsonl", {f"d{i}": f"document number {i}" for i in range(5)}
                   | {"d0": "rewritten zero"})
    ok("sync", str(changed), "--index", str(index), "-q")
    r = ok("compact", str(index))
    assert r.stdout.startswith(f"compacted {index}: dropped 1 unused content(s), removed 0 orphan chunk(s) "
                               "and 0 unfinished write(s), packed 2 sparse chunk(s) into 1, freed ")
    assert r.stdout.endswith(" MiB of the manifest\n")
    assert json.loads(ok("compact", str(index), "--json").stdout)["chunks_packed"] == 0


def test_export_to_a_missing_directory_or_an_unknown_format_is_refused_clearly(tmp_path: Path,
                                                                              index: Path) -> None:
    out = tmp_path / "no" / "such" / "dir" / "x.npy"
    r = invoke("export", str(index), "--out", str(out))
    no_traceback(r)
    assert r.exit_code == 2
    assert r.stderr == (f"indexer: error: cannot write {out}: the directory {out.parent} does not exist; "
                        "create it first\n")
    r = invoke("export", str(index), "--out", str(tmp_path / "x.npy"), "--ids", str(out.parent / "ids.txt"))
    assert r.exit_code == 2 and f"the directory {out.parent} does not exist" in r.stderr
    assert not (tmp_path / "x.npy").exists()
    for name in ("x.csv", "x"):
        r = invoke("export", str(index), "--out", str(tmp_path / name))
        assert r.exit_code == 2 and "export writes .npy or .parquet files" in r.stderr, r.stderr
        assert not (tmp_path / name).exists()
    ok("export", str(index), "--out", str(tmp_path / "x"), "--format", "npy")  # named, any file name
    assert np.load(tmp_path / "x", allow_pickle=False).shape == (5, 8)


def test_help_says_what_the_options_are() -> None:
    top = ok("--help").stdout
    assert "Exit codes:" in top and "130" in top and "5    sync refused to delete" in top
    assert "4    the embedding backend is unavailable" in top and "143 by SIGTERM" in top
    sync_help = " ".join(ok("sync", "--help").stdout.split())
    assert "into the index at --index DIR" in sync_help and "Exit codes: 0 done" in sync_help
    assert "mean cosine about 0.998 to torch" in sync_help
    export_help = " ".join(ok("export", "--help").stdout.split())
    assert "Also write the ids in row order (an output)" in export_help
    assert "in the order of --ids" not in export_help


def test_the_default_model_path_is_a_str_sentence_transformers_loads() -> None:
    from sentence_transformers import SentenceTransformer

    path = indexer.default_model_path()
    assert isinstance(path, str)
    assert SentenceTransformer(path, device="cpu").get_sentence_embedding_dimension() == 384


def test_only_the_flags_given_reach_the_backend_and_batch_limits_map_where_it_packs_by_tokens() -> None:
    from indexer.runners._flags import backend_options

    flags = {"workers": None, "max_retries": 0, "no_truncate": False, "rpm": 60}
    assert backend_options("processes", flags, batch_size=8) == {"max_retries": 0, "rpm": 60}
    assert backend_options("openai", flags, batch_size=8) == {"max_retries": 0, "rpm": 60,
                                                              "max_batch_inputs": 8}
    assert backend_options("gpus", {}, batch_size=8, batch_tokens=4096) == {"max_batch_texts": 8,
                                                                           "batch_tokens": 4096}
    assert backend_options("gpus", {}) == {}
