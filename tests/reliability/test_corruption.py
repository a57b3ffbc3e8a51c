"""Chunk files damaged after they were written (issue 10, item 5), through the real CLI.

Each chunk's XXH3-64 checksum is recorded in the manifest when its rows are committed. A zeroed chunk,
one with 50 flipped bits, and a truncated one: `indexer verify` reports it (exit 1), readers refuse to
serve it, `verify --repair` re-queues its rows, the next sync of the same source embeds them again, and
`verify` is clean. An index from before checksums were kept keeps working: `verify` notes its chunks
are not checksummed and `verify --repair` records their checksums.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import indexer
from indexer.embedders.fake import FakeEmbedder
from indexer.manifest import Inspection

from helpers import served
from manifest_surgery import Tamper

CHUNK_ROWS = 16
ENV = dict(os.environ, HF_HUB_OFFLINE="1", INDEXER_CHUNK_ROWS=str(CHUNK_ROWS))
for _name in ("INDEXER_CRASH_AT", "INDEXER_PAUSE_AT", "INDEXER_LEASE_SECONDS", "INDEXER_SCAN_BATCH"):
    ENV.pop(_name, None)
DOCS = {f"d{i:03d}": f"document {i} " + "word " * (i % 7) for i in range(100)}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "indexer", *args], env=ENV, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def index(tmp_path: Path) -> tuple[Path, Path]:
    source = tmp_path / "docs.jsonl"
    source.write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in DOCS.items()))
    ix = tmp_path / "idx"
    done = run("sync", str(source), "--index", str(ix), "--model", "fake:16")
    assert done.returncode == 0, done.stderr
    return ix, source


def damage(path: Path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "zeroed":
        data = bytearray(len(data))
    elif how == "flipped":
        rng = random.Random(50)
        for bit in rng.sample(range(len(data) * 8), 50):
            data[bit // 8] ^= 1 << (bit % 8)
    else:  # truncated
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["zeroed", "flipped", "truncated"])
def test_damaged_chunk_is_found_refused_repaired_and_restored(index: tuple[Path, Path], how: str) -> None:
    ix, source = index
    chunk_file = ix / "vectors.zarr" / "c" / "2" / "0"
    damage(chunk_file, how)

    report = run("verify", str(ix))
    assert report.returncode == 1, report.stdout + report.stderr
    assert "chunk 2" in report.stdout, report.stdout
    assert "checksum" in report.stdout or "torn" in report.stdout, report.stdout
    # Readers never serve the damaged rows as vectors: they say what is wrong and what to do.
    with indexer.open(ix) as idx:
        _, vecs = idx.vectors()
        with pytest.raises(indexer.StoreError, match=r"verify .* --repair"):
            np.asarray(vecs)
        with pytest.raises(indexer.StoreError, match="chunk 2"):
            idx.get(["d000", *[k for k in DOCS if k != "d000"]])
    export = run("export", str(ix), "--out", str(ix.parent / "out.npy"))
    assert export.returncode == 1 and "chunk 2" in export.stderr and "Traceback" not in export.stderr

    repair = run("verify", str(ix), "--repair", "--json")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    requeued = json.loads(repair.stdout)["repaired"]
    # Rows are checksummed one by one too: only the rows that changed are embedded again.
    assert requeued == CHUNK_ROWS if how != "flipped" else 0 < requeued <= CHUNK_ROWS, repair.stdout
    assert len(served(ix)) == len(DOCS) - requeued  # the damaged rows are no longer served
    again = run("sync", str(source), "--index", str(ix), "--model", "fake:16", "--json", "-q")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["embedded"] == requeued
    clean = run("verify", str(ix))
    assert clean.returncode == 0 and "problem" not in clean.stdout, clean.stdout
    got = served(ix)
    assert sorted(got) == sorted(DOCS)
    for key, vec in got.items():
        assert vec.tobytes() == FakeEmbedder(16).embed([DOCS[key]])[0].tobytes(), key


def test_compact_never_copies_a_damaged_chunk(index: tuple[Path, Path], tmp_path: Path) -> None:
    """Packing a damaged sparse chunk into a new one would give its bad rows a good checksum."""
    ix, _ = index
    fewer = tmp_path / "fewer.jsonl"
    fewer.write_text("".join(json.dumps({"id": k, "text": v}) + "\n"
                             for i, (k, v) in enumerate(DOCS.items()) if i % 2))
    fewer_sync = run("sync", str(fewer), "--index", str(ix), "--model", "fake:16", "--delete-missing")
    assert fewer_sync.returncode == 0, fewer_sync.stderr
    with indexer.open(ix) as idx:
        slots = dict(idx.manifest.done_slots())
    chunk = sorted(s // CHUNK_ROWS for s in slots.values())[0]
    damage(ix / "vectors.zarr" / "c" / str(chunk) / "0", "flipped")
    compact = run("compact", str(ix), "--json")
    assert compact.returncode == 0, compact.stderr
    assert json.loads(compact.stdout)["damaged_chunks_left"] == 1
    report = run("verify", str(ix))
    assert report.returncode == 1 and f"chunk {chunk} does not match its checksum" in report.stdout


@pytest.mark.parametrize("records", ["verify --repair", "compact"])
def test_an_index_from_before_checksums_is_noted_then_recorded(index: tuple[Path, Path],
                                                               records: str) -> None:
    ix, _ = index
    with Tamper.open(ix) as tamper:
        tamper.forget_checksums()  # as an index migrated from schema 3 has it
    first = run("verify", str(ix))
    assert first.returncode == 0, first.stdout
    assert "written before checksums were kept" in first.stdout, first.stdout
    assert served(ix)  # readers work without checksums
    if records == "compact":
        recorded = run("compact", str(ix), "--json")
        assert recorded.returncode == 0, recorded.stderr
        assert json.loads(recorded.stdout)["checksums_recorded"] == 7
    else:
        recorded = run("verify", str(ix), "--repair")
        assert recorded.returncode == 0, recorded.stdout
        assert "recorded the checksums of 7 chunk(s)" in recorded.stdout, recorded.stdout
    again = run("verify", str(ix))
    assert again.returncode == 0 and "note" not in again.stdout, again.stdout
    damage(ix / "vectors.zarr" / "c" / "3" / "0", "zeroed")  # now found like any other
    found = run("verify", str(ix))
    assert found.returncode == 1, found.stdout
    assert f"chunk 3 does not match its checksum: {CHUNK_ROWS} done vector(s) changed" in found.stdout


def test_readers_never_serve_a_nan_row_as_a_vector(index: tuple[Path, Path]) -> None:
    """Without a checksum to catch it (a chunk from before checksums were kept), a served row that
    reads as NaN is still refused, naming its slot and the repair."""
    ix, _ = index
    with Tamper.open(ix) as tamper:
        tamper.forget_checksums()
    with indexer.open(ix) as idx:
        slot = Inspection(idx.manifest.conn).slots_of(["d003"])["d003"]
    chunk_file = ix / "vectors.zarr" / "c" / str(slot // CHUNK_ROWS) / "0"
    rows = np.fromfile(chunk_file, dtype="<f4").reshape(CHUNK_ROWS, 16)
    rows[slot % CHUNK_ROWS, 5] = np.nan
    rows.tofile(chunk_file)
    with indexer.open(ix) as idx:
        _, vecs = idx.vectors()
        with pytest.raises(indexer.StoreError, match=rf"read as NaN \(slot\(s\) {slot}\).*--repair"):
            np.asarray(vecs)
        with pytest.raises(indexer.StoreError, match="read as NaN"):
            idx.get(["d003"])
        assert np.array_equal(idx.get(["d000"])[0], FakeEmbedder(16).embed([DOCS["d000"]])[0])
