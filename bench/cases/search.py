"""Exact search over 1M x 384 vectors: `Index.search_vectors` against numpy `matrix @ q.T`.

`Index.search_vectors` (blocked, bounded memory) against a plain numpy `matrix @ q.T` over the same
vectors loaded whole.

    python -m bench search                          # 1M x 384 float32, 100 queries, k=10
    python -m bench search --n 100000 --no-results  # a quick look

The index is synthetic but in the real format: `Index.create` (manifest.sqlite, vectors.zarr, index.toml,
model fake:DIM), random unit vectors written chunk by chunk with `VectorStore.write_chunk`, and one
manifest row per document (content done at its slot, document served), inserted in one transaction.
It is cached in bench/data/search_index_N_DIM_DTYPE/ and reused. The queries are 100 random unit
vectors (seeded); the search is given vectors, so no model runs: this measures the search alone.

Each arm runs in a fresh process, alternating (search, numpy, search, numpy, ...):
  search   indexer.open + what Index.search_vectors(q, k) does: read the served rows (ids, slots) from
           the manifest, then every vector block by block (memory-mapped chunk files, bounded working
           set), the two steps timed apart
  numpy    indexer.open + np.asarray(vecs) (the whole matrix in memory) + matrix @ q.T + argpartition
           top-k per query: what a user would write by hand
Both report seconds (open, rows, scoring) and the process's peak RSS; the top-k ids of both are
compared (they must be equal: the same exact search).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .._common import DATA, Report, Result, case_parser, child_result, rss_mb, run_child, table

DONE_MARK = "bench-built.json"


def index_path(n: int, dim: int, dtype: str) -> Path:
    return DATA / f"search_index_{n}_{dim}_{dtype}"


def build(n: int, dim: int, dtype: str) -> float:
    """Make the synthetic index (unless cached); returns the seconds it took (0 when cached)."""
    import numpy as np

    from indexer import Index, Settings
    from indexer.config import EmbeddingConfig
    from indexer.embedders.fake import FakeEmbedder

    path = index_path(n, dim, dtype)
    if (path / DONE_MARK).exists():
        return 0.0
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    settings = Settings(dtype=dtype)
    info = FakeEmbedder(dim).info  # the configuration a fake-model sync would record
    config = EmbeddingConfig(model=info.model, revision=info.revision, dim=dim, dtype=dtype,
                             normalize=True, max_seq_length=0)
    idx = Index.create(path, config, settings)
    rows = idx.store.chunk_rows
    n_chunks = -(-n // rows)
    idx.store.ensure_chunks(n_chunks)
    rng = np.random.default_rng(0)
    for c in range(n_chunks):
        block = np.full((rows, dim), np.nan, dtype=np.float32)
        used = min(rows, n - c * rows)
        v = rng.standard_normal((used, dim), dtype=np.float32)
        block[:used] = v / np.linalg.norm(v, axis=1, keepdims=True)
        idx.store.write_chunk(c, block)
    conn = idx.manifest.conn
    conn.execute("BEGIN IMMEDIATE")
    for start in range(0, n, 100_000):
        part = range(start, min(n, start + 100_000))
        hashes = [i.to_bytes(16, "little") for i in part]  # synthetic content ids, unique
        conn.executemany("INSERT INTO contents (hash, state, chars, slot) VALUES (?, 'done', 100, ?)",
                         zip(hashes, part, strict=True))
        conn.executemany("INSERT INTO documents (id, hash, ready_hash) VALUES (?, ?, ?)",
                         ((f"doc{i:07d}", h, h) for i, h in zip(part, hashes, strict=True)))
    # Each document's content number (documents.seq, migrations/0010), as a scan sets it.
    conn.execute("UPDATE documents SET seq = (SELECT c.seq FROM contents c WHERE c.hash = documents.hash)")
    conn.execute("UPDATE meta SET value = ? WHERE key = 'next_chunk'", (n_chunks,))
    conn.execute("COMMIT")
    idx.close()
    seconds = time.perf_counter() - t
    (path / DONE_MARK).write_text(json.dumps({"n": n, "dim": dim, "dtype": dtype, "seconds": seconds}))
    return seconds


def rss_split_mb() -> dict[str, float]:
    """RSS now, split: anonymous (the process's own memory) and file-backed (pages of memory-mapped
    chunk files and of loaded libraries: shared with the page cache, reclaimable, not a copy)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {f"{key.lower()}_end_mb": int(fields[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}


def queries(n_queries: int, dim: int) -> Any:
    import numpy as np

    q = np.random.default_rng(1).standard_normal((n_queries, dim), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def child(arm: str, n: int, dim: int, dtype: str, n_queries: int, k: int, out: Path) -> None:
    import numpy as np

    import indexer
    from indexer.search import search_rows

    q = queries(n_queries, dim)
    base_rss = rss_mb()
    t0 = time.perf_counter()
    idx = indexer.open(index_path(n, dim, dtype))
    result: dict[str, object] = {"arm": arm}
    if arm == "search":
        # what Index.search_vectors does, its two steps timed apart
        t = time.perf_counter()
        rows = idx.chunks()
        n_rows = len(rows.ids)  # reads the snapshot of the rows
        result["rows_s"] = time.perf_counter() - t
        t = time.perf_counter()
        hits = search_rows(rows, q, k, normalized=idx.config.normalize)
        result["search_s"] = time.perf_counter() - t
        top = [[h.id for h in row] for row in hits]
    else:
        t = time.perf_counter()
        ids, vecs = idx.vectors()
        matrix = np.asarray(vecs, dtype=np.float32)
        n_rows = len(ids)
        result["load_s"] = time.perf_counter() - t
        t = time.perf_counter()
        scores = matrix @ q.T  # (rows, queries)
        result["matmul_s"] = time.perf_counter() - t
        t = time.perf_counter()
        part = np.argpartition(-scores, k - 1, axis=0)[:k].T
        order = np.take_along_axis(-scores.T, part, axis=1).argsort(axis=1)
        best = np.take_along_axis(part, order, axis=1)
        top = [[ids[i] for i in row] for row in best]
        result["topk_s"] = time.perf_counter() - t
    result.update(total_s=time.perf_counter() - t0, rows=n_rows, rss_after_imports_mb=base_rss,
                  **rss_split_mb())
    out.write_text(json.dumps(top))
    child_result(result)


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["search", "numpy"])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child, a.n, a.dim, a.dtype, a.queries, a.k, a.out)
        return
    report = Report()
    built = build(a.n, a.dim, a.dtype)
    if built:
        print(f"built the synthetic index in {built:.1f}s", file=sys.stderr)
    args = ["--n", str(a.n), "--dim", str(a.dim), "--dtype", a.dtype, "--queries", str(a.queries),
            "-k", str(a.k)]
    runs: dict[str, list[Result]] = {"search": [], "numpy": []}
    tops: dict[str, str] = {}
    for _ in range(a.repeat):
        for arm in ("search", "numpy"):
            out = DATA / f"search_top_{arm}.json"
            r = run_child(__name__, arm, ["--out", str(out), *args])
            runs[arm].append(r)
            tops[arm] = out.read_text()
            print(f"{arm}: {json.dumps(r)}", file=sys.stderr)
    same = tops["search"] == tops["numpy"]

    def med(arm: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in runs[arm])

    size_mb = a.n * a.dim * (4 if a.dtype == "float32" else 2) / 2**20
    rows = [
        ["indexer `search_vectors` (blocked)", med("search", "rows_s"), med("search", "search_s"),
         med("search", "total_s"), med("search", "peak_rss_mb"), med("search", "rssanon_end_mb"),
         med("search", "rssfile_end_mb")],
        ["numpy: whole matrix, `matrix @ q.T`, argpartition", med("numpy", "load_s"),
         med("numpy", "matmul_s") + med("numpy", "topk_s"), med("numpy", "total_s"),
         med("numpy", "peak_rss_mb"), med("numpy", "rssanon_end_mb"), med("numpy", "rssfile_end_mb")],
    ]
    body = [
        f"{a.n:,} x {a.dim} {a.dtype} vectors ({size_mb:,.0f} MiB), a batch of {a.queries} queries, "
        f"k={a.k}; median of {a.repeat} fresh processes per arm, alternating. Page cache warm (the index "
        "was just built or read). Top-k ids of both arms identical: " + ("yes" if same else "**NO**") + ".",
        "",
        table(["arm", "read ids / load matrix (s)", "score + top-k (s)", "total incl. open (s)",
               "peak RSS (MB)", "at end: anonymous (MB)", "at end: file-backed (MB)"], rows),
        "",
        f"Scoring alone: indexer {med('search', 'search_s'):.2f}s vs numpy matmul "
        f"{med('numpy', 'matmul_s'):.2f}s + top-k {med('numpy', 'topk_s'):.2f}s. The RSS split is read "
        "at the end of the process (peak RSS is the kernel's high-water mark): file-backed pages are "
        "the memory-mapped chunk files (kept open, at most 256 maps) and the loaded libraries, shared "
        "with the page cache and reclaimable, not a copy of the matrix.",
    ]
    title = f"Exact search, {a.n:,} x {a.dim} {a.dtype}, {a.queries} queries (bench/cases/search.py)"
    report.publish(f"search-{a.dtype}-q{a.queries}", title, body, write=not a.no_results,
                   provisional=report.note or "Shared machine: timings are noisy.")
    if not same:
        print("the two arms disagree on the top-k ids", file=sys.stderr)

