"""Helpers shared by the tests of every tier: plain functions and classes, imported by name
(`from helpers import served`); tests/ is on sys.path (pyproject's `pythonpath`), so spawned workers
and subprocesses given the test process's sys.path find this module, tiny_model.py and injected_oom.py too.

    ROOT                    the repository's root (subprocesses run from there)
    write_jsonl(path, docs) write documents as JSONL; `docs` is {id: text} or a list of dicts / pairs
    fake_vector(text, dim)  the fake model's vector (FakeEmbedder(dim)); FAKE_DIM is the fixtures' dim
    cosines(a, b)           cosine similarity along the last axis (two vectors, or row by row), float64
    corpus(n, distinct)     n documents over `distinct` texts
    served(index_dir)       {id: vector} of every document the index serves
    assert_same_vectors     two indexes serve the same ids with bit-identical vectors
    assert_serves           an index serves exactly these {id: text}, each with the fake model's vector
    docs_of(n)              n documents {id: text} with distinct texts
    RecordingEmbedder       a fake embedder that records its calls and fails or spoils chosen texts
    invoke(*args)           the `indexer` command through click's CliRunner (exceptions caught)
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
    vector: np.ndarray = FakeEmbedder(dim).embed([text])[0]
    return vector


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity along the last axis (of two vectors, or row by row of two matrices), in float64."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1)
    found: np.ndarray = np.sum(a64 * b64, axis=-1) / norms
    return found


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


def assert_serves(ix: Path, docs: dict[str, str], dim: int = FAKE_DIM) -> None:
    """The index serves exactly `docs`, each with the vector of its text by the fake model of `dim`."""
    got = served(ix)
    assert sorted(got) == sorted(docs)
    for i, text in docs.items():
        np.testing.assert_array_equal(got[i], fake_vector(text, dim), err_msg=repr(i))
