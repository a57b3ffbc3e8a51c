"""Directories that are not (wholly) an index (issue 10, item 3), through the CLI (CliRunner).

- index.toml lost or empty (a power cut): the configuration is recovered from its copy in the manifest
  and index.toml written back; no chunk is touched, nothing is embedded again, and a sync with another
  model is refused as for any index.
- An index from before that copy was kept, with its index.toml lost: refused, naming the repair.
- A directory holding someone else's `vectors.zarr/` or `manifest.sqlite`: refused; every file in it
  keeps its bytes and its mtime, and no file is added.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from indexer.cli import cli

from helpers import fake_vector, served, write_jsonl
from manifest_surgery import Tamper, make_blank_sqlite, make_foreign_sqlite

DOCS = {f"d{i:02d}": f"text {i} " + "w " * (i % 5) for i in range(40)}
ENV = {"INDEXER_CHUNK_ROWS": "8"}


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=ENV)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `directory`: its bytes and its mtime (ns)."""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def index(tmp_path: Path) -> tuple[Path, Path]:
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    ix = tmp_path / "idx"
    code, _, err = invoke("sync", str(src), "--index", str(ix), "--model", "fake:16")
    assert code == 0, err
    return ix, src


def chunks(ix: Path) -> dict[str, tuple[bytes, int]]:
    return snapshot(ix / "vectors.zarr" / "c")


@pytest.mark.parametrize("loss", ["missing", "empty", "garbled"])
def test_a_lost_index_toml_is_recovered_from_the_manifest(index: tuple[Path, Path], loss: str) -> None:
    ix, src = index
    original = (ix / "index.toml").read_text()
    before = chunks(ix)
    if loss == "missing":
        (ix / "index.toml").unlink()
    else:
        (ix / "index.toml").write_text("" if loss == "empty" else "[embedding]\nmodel = ")
    code, out, err = invoke("sync", str(src), "--index", str(ix), "--model", "fake:16", "--json", "-q")
    assert code == 0, err
    assert json.loads(out)["embedded"] == 0  # nothing embedded again, nothing lost
    assert (ix / "index.toml").read_text() == original
    assert chunks(ix) == before
    code, out, _ = invoke("verify", str(ix))
    assert code == 0, out
    got = served(ix)
    assert sorted(got) == sorted(DOCS)
    assert all(np.array_equal(v, fake_vector(DOCS[k])) for k, v in got.items())


def test_a_lost_index_toml_is_recovered_by_status_too(index: tuple[Path, Path]) -> None:
    ix, _ = index
    original = (ix / "index.toml").read_text()
    (ix / "index.toml").write_text("")
    code, out, err = invoke("status", str(ix), "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == "fake:16" and json.loads(out)["done"] == len(DOCS)
    assert (ix / "index.toml").read_text() == original


def test_a_lost_index_toml_never_rebinds_the_index_to_another_model(index: tuple[Path, Path]) -> None:
    ix, src = index
    (ix / "index.toml").unlink()
    before = chunks(ix)
    code, _, err = invoke("sync", str(src), "--index", str(ix), "--model", "fake:8")
    assert code == 3, err  # ConfigMismatchError
    assert "fake:16" in err and "fake:8" in err and "nothing was changed" in err
    assert chunks(ix) == before
    code, out, _ = invoke("status", str(ix), "--json")
    assert code == 0 and json.loads(out)["model"] == "fake:16" and json.loads(out)["dim"] == 16


def test_an_older_index_without_the_copy_is_refused_naming_the_repair(index: tuple[Path, Path]) -> None:
    ix, src = index
    with Tamper.open(ix) as tamper:
        tamper.forget_config()  # as an index made before 0004 has it
    (ix / "index.toml").unlink()
    before = snapshot(ix)
    code, _, err = invoke("sync", str(src), "--index", str(ix), "--model", "fake:16")
    assert code != 0
    assert "index.toml" in err and "restore" in err and "from a backup" in err, err
    assert "Nothing was changed" in err, err
    assert "Traceback" not in err
    assert chunks(ix) == {k[len("vectors.zarr/c/"):]: v for k, v in before.items()
                          if k.startswith("vectors.zarr/c/")}
    assert not (ix / "index.toml").exists()


def make_foreign_zarr(directory: Path) -> None:
    array = zarr.create_array(directory / "vectors.zarr", shape=(8, 4), chunks=(4, 4), dtype="f4",
                              zarr_format=3)
    array[:] = np.arange(32, dtype="f4").reshape(8, 4)


@pytest.mark.parametrize("foreign", ["zarr", "sqlite", "sqlite-app-id", "zarr+sqlite", "not-sqlite"])
@pytest.mark.parametrize("command", ["sync", "status", "verify", "compact"])
def test_a_directory_holding_someone_elses_files_is_refused_untouched(
        tmp_path: Path, foreign: str, command: str) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    if "zarr" in foreign:
        make_foreign_zarr(theirs)
    if foreign.startswith("sqlite") or foreign == "zarr+sqlite":
        make_foreign_sqlite(theirs, 0x1234 if foreign == "sqlite-app-id" else 0)
    if foreign == "not-sqlite":
        (theirs / "manifest.sqlite").write_bytes(b"my notes, not a database\n" * 10)
    before = snapshot(theirs)
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    args = ["sync", str(src), "--index", str(theirs), "--model", "fake:16"] if command == "sync" \
        else [command, str(theirs)]
    code, _, err = invoke(*args)
    assert code == 2, err  # IndexNotFoundError
    assert "is not an index" in err and "Nothing was changed" in err, err
    assert snapshot(theirs) == before


def hot_journal(db: Path, pages_before: int) -> None:
    """A rollback journal left by a process killed mid-transaction, as SQLite writes its header: magic,
    record count, nonce, the database's pages before the transaction, sector size, page size."""
    header = (bytes.fromhex("d9d505f920a163d7") + bytes(4) + bytes.fromhex("32c2359c")
              + pages_before.to_bytes(4, "big") + (512).to_bytes(4, "big") + (4096).to_bytes(4, "big"))
    db.with_name(db.name + "-journal").write_bytes(header.ljust(512, b"\x00"))


def test_a_creation_killed_while_it_set_the_file_up_is_synced_over(tmp_path: Path) -> None:
    """Killed while it switched its new, empty manifest to WAL (the crash harness found it): the file
    has a header page and a hot journal back to empty, which a read-only look cannot roll back. It is
    an unfinished creation, not someone else's database: the next sync makes the index there."""
    ix = tmp_path / "ix"
    ix.mkdir()
    make_blank_sqlite(ix / "manifest.sqlite")  # an SQLite header page, no table, no application_id
    hot_journal(ix / "manifest.sqlite", pages_before=0)
    src = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    code, _, err = invoke("sync", str(src), "--index", str(ix), "--model", "fake:16")
    assert code == 0, err
    got = served(ix)
    assert set(got) == set(DOCS) and np.array_equal(got["d03"], fake_vector(DOCS["d03"], 16))


def test_someone_elses_database_with_a_hot_journal_is_refused_untouched(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    make_foreign_sqlite(theirs)
    hot_journal(theirs / "manifest.sqlite", pages_before=2)  # it held pages before: not a creation
    before = snapshot(theirs)
    code, _, err = invoke("sync", str(write_jsonl(tmp_path / "docs.jsonl", DOCS)), "--index", str(theirs),
                          "--model", "fake:16")
    assert code == 2 and "is not an index" in err, err
    assert snapshot(theirs) == before
