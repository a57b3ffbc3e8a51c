"""Helpers shared by the tests of every tier: plain functions and classes, imported by name
(`from helpers import served`); tests/ is on sys.path (pyproject's `pythonpath`), so spawned workers
and subprocesses given the test process's sys.path find this module, tiny_model.py and injected_oom.py too.

    ROOT                    the repository's root (subprocesses run from there)
    write_jsonl(path, docs) write documents as JSONL; `docs` is {id: text} or a list of dicts / pairs
    fake_vector(text, dim)  the fake model's vector (FakeEmbedder(dim)); FAKE_DIM is the fixtures' dim
    corpus(n, distinct)     n documents over `distinct` texts
    served(index_dir)       {id: vector} of every document the index serves
    assert_same_vectors     two indexes serve the same ids with bit-identical vectors
    assert_serves           an index serves exactly these {id: text}, each with the fake model's vector
    docs_of(n)              n documents {id: text} with distinct texts
    RecordingEmbedder       a fake embedder that records its calls and fails or spoils chosen texts
    invoke(*args)           the `indexer` command through click's CliRunner (exceptions caught)
    downgrade_to_schema_1   make a manifest look as schema version 1 left it (migration tests)
    Throttle                a thread that makes a process slow but alive (SIGSTOP / SIGCONT in turn)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np
from click.testing import CliRunner, Result

from indexer.cli import cli
from indexer.embedders.fake import FakeEmbedder

ROOT = Path(__file__).resolve().parent.parent

FAKE_DIM = 16

Docs = Mapping[str, str] | Iterable[Mapping[str, object] | tuple[str, str]]


def write_jsonl(path: Path, docs: Docs) -> Path:
    """Write `docs` to `path` as JSONL (one {"id", "text"} object a line) and return `path`.

    `docs` is a {id: text} dict, or a list of dicts (written as given, extra fields included) or
    (id, text) pairs."""
    rows: list[Mapping[str, object]] = []
    if isinstance(docs, Mapping):
        rows = [{"id": k, "text": v} for k, v in docs.items()]
    else:
        for d in docs:
            rows.append(d if isinstance(d, Mapping) else {"id": d[0], "text": d[1]})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def fake_vector(text: str, dim: int = FAKE_DIM) -> np.ndarray:
    """The fake model's float32 vector for `text`."""
    return FakeEmbedder(dim).embed([text])[0]


def corpus(n: int, distinct: int) -> list[dict[str, str]]:
    """n documents over `distinct` texts: identical texts must share one content, embedded once."""
    return [{"id": f"d{i:05d}", "text": f"text number {i % distinct} " + "x" * (i % distinct % 50)}
            for i in range(n)]


def invoke(*args: str | Path, input: bytes | str | None = None) -> Result:
    """Run `indexer ARGS` in this process, as the console script would; exceptions are caught into the
    result (its exit_code, stdout, stderr and exception)."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=True)


def served(index_dir: Path) -> dict[str, np.ndarray]:
    """{id: vector} of every document the index at `index_dir` serves."""
    from indexer import Index

    with Index.open(index_dir) as idx:
        ids, vecs = idx.vectors()
        return dict(zip(list(ids), np.asarray(vecs), strict=True))


def assert_same_vectors(a: Path, b: Path) -> None:
    """The two indexes serve the same ids with bit-identical vectors."""
    va, vb = served(a), served(b)
    assert sorted(va) == sorted(vb)
    for key, vec in va.items():
        assert vec.dtype == vb[key].dtype and vec.tobytes() == vb[key].tobytes(), key


def downgrade_to_schema_1(manifest: Path) -> None:
    """Make a manifest look as an indexer of schema version 1 left it: drop every table and trigger that
    a later migration created and the ledger rows of those migrations, and give `contents` (texts
    back from `staged`), `claims` and `documents` (and its index) their first shape. (0005's columns
    of `contents` need not go: 0003 rebuilds it from its first eight columns anyway.)"""
    import sqlite3

    from indexer.manifest import migrations_dir

    first = sqlite3.connect(":memory:")
    first.executescript(next(migrations_dir().glob("0001_*.sql")).read_text(encoding="utf-8"))
    original = {n for (n,) in first.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    contents_sql = [sql for (sql,) in first.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'contents' AND sql IS NOT NULL ORDER BY type DESC")]
    documents_index_sql = [sql for (sql,) in first.execute(
        "SELECT sql FROM sqlite_master WHERE tbl_name = 'documents' AND type = 'index' AND sql IS NOT NULL")]
    first.close()
    conn = sqlite3.connect(manifest, isolation_level=None)
    later = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
             if n not in original and n != "schema_migrations" and not n.startswith("sqlite_")]
    triggers = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")]
    conn.executescript("BEGIN; " + "".join(f'DROP TRIGGER "{n}"; ' for n in triggers)  # 1 had none
                       + "ALTER TABLE contents RENAME TO contents_later; "
                       + "".join(f"{sql}; " for sql in contents_sql)
                       + """INSERT INTO contents (hash, state, chars, text, slot, attempts, error)
                            SELECT c.hash, c.state, c.chars, s.text, c.slot, c.attempts, c.error
                            FROM contents_later c LEFT JOIN staged s USING (seq) WHERE c.parts = 0;
                            DROP TABLE contents_later;
                            ALTER TABLE claims DROP COLUMN first_seq;
                            ALTER TABLE claims DROP COLUMN last_seq;
                            DROP INDEX documents_by_content;
                            ALTER TABLE documents DROP COLUMN seq; """
                       + "".join(f"{sql}; " for sql in documents_index_sql)
                       + "".join(f'DROP TABLE "{n}"; ' for n in later)
                       + "DELETE FROM schema_migrations WHERE version >= 2; COMMIT;")
    conn.close()


class Throttle(threading.Thread):
    """Makes a worker slow but alive: SIGSTOP for `stopped` seconds, SIGCONT for `running`, over and over."""

    def __init__(self, pid: int, stopped: float, running: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.stopped, self.running, self.done = pid, stopped, running, threading.Event()

    def run(self) -> None:
        try:
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                time.sleep(self.stopped)
                os.kill(self.pid, signal.SIGCONT)
                time.sleep(self.running)
        except ProcessLookupError:
            pass
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)


class RecordingEmbedder:
    """A fake embedder for tests: FakeEmbedder(dim), plus
    - `calls`: the texts of every embed() call, in order (`embedded` counts them by text);
    - `fail`: texts that make embed() raise ValueError naming them;
    - `nonfinite`: texts whose vector comes back with a NaN (or inf) in it;
    - `during`: a callback run at the start of every embed() call."""

    def __init__(self, dim: int = FAKE_DIM, *, fail: Iterable[str] = (),
                 nonfinite: dict[str, float] | None = None,
                 during: Callable[[list[str]], None] | None = None) -> None:
        self.inner = FakeEmbedder(dim)
        self.info = self.inner.info
        self.fail = set(fail)
        self.nonfinite = nonfinite or {}
        self.during = during
        self.calls: list[list[str]] = []

    @property
    def embedded(self) -> Counter[str]:
        return Counter(t for call in self.calls for t in call)

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        if self.during is not None:
            self.during(list(texts))
        for t in texts:
            if t in self.fail:
                raise ValueError(f"cannot embed {t!r}")
        out = self.inner.embed(texts)
        for i, t in enumerate(texts):
            if t in self.nonfinite:
                out[i, 1] = self.nonfinite[t]
        return out


def docs_of(n: int, prefix: str = "d", text: str = "text") -> dict[str, str]:
    return {f"{prefix}{i:03d}": f"{text} number {i}" for i in range(n)}


def assert_serves(ix: Path, docs: dict[str, str]) -> None:
    """The index serves exactly `docs`, each with the fake model's vector of its text."""
    got = served(ix)
    assert sorted(got) == sorted(docs)
    for i, text in docs.items():
        np.testing.assert_array_equal(got[i], fake_vector(text), err_msg=i)
