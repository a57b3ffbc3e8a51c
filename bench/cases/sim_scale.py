"""How one index behaves at N documents (a simulated index): status, no-change resync, vectors().

A simulated N-document index, then `status`, a no-change resync and the first touch of `vectors()`,
measured (docs/SCALING.md).

    python -m bench sim_scale --n 1000000 --out bench/data/sim_1M
    python -m bench sim_scale --n 10000000 --out bench/data/sim_10M --skip-resync

How the index is built (a full sync of 10M documents would take hours on 2 cores): a real sync of the
first document with the fake model (fake:16) creates a real index (manifest from the migrations,
vectors.zarr, index.toml). Then the other N-1 documents are bulk-inserted with SQL into that manifest,
exactly as a finished sync leaves them: one `documents` row (id "d%08d", hash, ready_hash) and one
`contents` row (XXH3-128 of the text "document %d", state done, chars, text NULL, its slot) each, one
committed `claims` row per chunk, `meta.next_chunk`; then the status counts are recounted from those
rows (`Manifest.recount`, as `verify --repair` does). Each chunk of vectors.zarr is written whole through
VectorStore.write_chunk (durably, as a sync does) with random unit vectors, not the fake model's: the
measurements below read vectors, they do not check their values. The JSONL source of the same N
documents is written too, so that the resync finds every document unchanged.

Measured, each in a fresh process: `indexer status DIR --json` (CLI wall time, interpreter start
included), `Index.status()` in process, a no-change `indexer.sync(DIR, paths=[SOURCE])` (wall, peak RSS),
`Index.vectors()` then `len(ids)` (the first touch: reads the id/slot snapshot) and reading rows,
and the sizes on disk. Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xxhash

from .._common import ROOT, case_parser, child_result, peak_rss_mb, run_child

DIM = 16
BATCH = 200_000


def text_of(i: int) -> str:
    return f"document {i}"


def build(out: Path, n: int) -> dict[str, float]:
    from indexer import SyncOptions, sync
    from indexer.manifest import Manifest
    from indexer.settings import Settings
    from indexer.store import VectorStore

    t0 = time.perf_counter()
    index_dir, source = out / "idx", out / "docs.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    with source.open("w") as f:
        for start in range(0, n, BATCH):
            f.write("".join(f'{{"id": "d{i:08d}", "text": "{text_of(i)}"}}\n'
                            for i in range(start, min(n, start + BATCH))))
    t_source = time.perf_counter() - t0
    sync(index_dir, [{"id": "d00000000", "text": text_of(0)}], SyncOptions(model=f"fake:{DIM}"))
    store = VectorStore(index_dir / "vectors.zarr")
    rows = store.chunk_rows
    chunks = -(-(n - 1) // rows)  # chunk 0 holds the first document, from the real sync
    conn = sqlite3.connect(index_dir / "manifest.sqlite", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")  # the build only; the measured runs use the library's
    conn.execute("PRAGMA cache_size = -1000000")  # 1 GB: the build only
    conn.execute("BEGIN")
    # All hashes first, as two big-endian 64-bit halves, so that contents (keyed by hash) are inserted
    # in key order: random-order inserts into a B-tree larger than the cache crawl.
    digest = xxhash.xxh3_128_digest
    hashes = np.frombuffer(b"".join(digest(text_of(i).encode()) for i in range(n)),
                           dtype=">u8").reshape(n, 2)
    order = np.lexsort((hashes[:, 1], hashes[:, 0]))
    order = order[order != 0]  # document 0 is in the index already, from the real sync
    raw = hashes.tobytes()
    for start in range(0, len(order), BATCH):
        conn.executemany("INSERT INTO contents (hash, state, chars, slot) VALUES (?, 'done', ?, ?)",
                         ((raw[16 * i:16 * i + 16], len(text_of(i)), rows + i - 1)
                          for i in order[start:start + BATCH].tolist()))
    for start in range(1, n, BATCH):
        conn.executemany("INSERT INTO documents (id, hash, ready_hash) VALUES (?, ?, ?)",
                         ((f"d{i:08d}", raw[16 * i:16 * i + 16], raw[16 * i:16 * i + 16])
                          for i in range(start, min(n, start + BATCH))))
    # Each document's content number (documents.seq, migrations/0010), as a scan sets it.
    conn.execute("UPDATE documents SET seq = (SELECT c.seq FROM contents c WHERE c.hash = documents.hash)")
    conn.executemany("INSERT INTO claims (token, owner, chunk, expires_at, state) "
                     "VALUES ('sim', 'sim', ?, 0, 'committed')", ((c,) for c in range(1, chunks + 1)))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_chunk'", (chunks + 1,))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    manifest = Manifest(index_dir / "manifest.sqlite", Settings())
    manifest.recount()  # the status counts of rows inserted behind the library's back
    manifest.close()
    t_manifest = time.perf_counter() - t0 - t_source
    store.ensure_chunks(chunks + 1)
    rng = np.random.default_rng(0)
    for c in range(1, chunks + 1):
        block = rng.standard_normal((rows, DIM), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        used = min(rows, n - 1 - (c - 1) * rows)
        block[used:] = np.nan
        store.write_chunk(c, block)
    t_store = time.perf_counter() - t0 - t_source - t_manifest
    return {"build_source_s": t_source, "build_manifest_s": t_manifest, "build_store_s": t_store}


def child(what: str, index_dir: Path, source: Path) -> dict[str, float]:
    from indexer import Index, sync

    t0 = time.perf_counter()
    if what == "status":
        with Index.open(index_dir) as idx:
            idx.status()
        return {"status_in_process_s": time.perf_counter() - t0}
    if what == "resync":
        summary = sync(index_dir, paths=[str(source)])
        assert summary.embedded == 0 and summary.unchanged == summary.scanned, summary
        return {"resync_s": time.perf_counter() - t0, "resync_scan_s": summary.scan_seconds,
                "resync_peak_rss_mb": peak_rss_mb()}
    idx = Index.open(index_dir)
    ids, vecs = idx.vectors()
    t_open = time.perf_counter() - t0
    before = peak_rss_mb()
    t1 = time.perf_counter()
    count = len(ids)
    t_first = time.perf_counter() - t1
    t2 = time.perf_counter()
    first = np.asarray(vecs[:1024])
    t_rows = time.perf_counter() - t2
    assert np.isfinite(first).all()
    return {"vectors_open_s": t_open, "vectors_first_touch_s": t_first, "vectors_first_1024_rows_s": t_rows,
            "vectors_documents": count, "vectors_rss_growth_mb": peak_rss_mb() - before}


def main(argv: list[str] | None = None) -> None:
    parser = case_parser(__name__, __doc__, children=["status", "vectors", "resync"], results=False)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--skip-resync", action="store_true")
    args = parser.parse_args(argv)
    index_dir, source = args.out / "idx", args.out / "docs.jsonl"
    if args.child:
        child_result({**child(args.child, index_dir, source)})
        return
    result: dict[str, object] = {"n": args.n, "load_avg_at_start": os.getloadavg()}
    if not (index_dir / "manifest.sqlite").exists():
        result.update(build(args.out, args.n))
    t0 = time.perf_counter()
    status = subprocess.run([sys.executable, "-m", "indexer", "status", str(index_dir), "--json"], check=True,
                            capture_output=True, text=True, cwd=ROOT)
    result["status_cli_s"] = time.perf_counter() - t0
    assert json.loads(status.stdout)["done"] == args.n
    child_args = ["--out", str(args.out.resolve())]
    for what in ("status", "vectors", *(() if args.skip_resync else ("resync",))):
        got = run_child(__name__, what, child_args)
        result.update({k: v for k, v in got.items() if k not in ("wall_s", "peak_rss_mb")})
    result["manifest_mb"] = (index_dir / "manifest.sqlite").stat().st_size / 2**20
    result["vectors_mb"] = sum(p.stat().st_size for p in (index_dir / "vectors.zarr").rglob("*")
                               if p.is_file()) / 2**20
    result["source_mb"] = source.stat().st_size / 2**20
    print(json.dumps(result, indent=1))

