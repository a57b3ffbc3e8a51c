"""Peak memory and time of `Index.export` to .npy and .parquet at N rows (fake model, 384 dims).

    python -m bench export                  # 25,000 and 100,000 rows, float32 and float16
    python -m bench export --sizes 20000 --no-results

One index is built per dtype (fake:384, not timed). Each export then runs in a fresh child process,
which opens the index, exports, and reports its wall time and its peak RSS (VmHWM of that child);
an "open only" child (opens the index and reads the ids, no vectors) gives the baseline, so that the
export's own memory is the difference. The vectors alone would take N x 384 x 4 bytes (146 MiB at
100k float32): a bounded export stays far below that above the baseline. The Parquet file is read
back and compared with `vectors()` bit for bit. Two sizes show whether memory grows with the rows.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from .._common import Report, anon_peak, case_parser, child_result, run_child, table

DIM = 384


def child(index: Path, out: Path | None, fmt: str) -> None:
    import indexer

    with anon_peak() as memory:
        t = time.perf_counter()
        with indexer.open(index) as idx:
            if out is None:
                ids, _ = idx.vectors()
                n = len(ids)
            else:
                n = idx.export(out, format=fmt)
        seconds = time.perf_counter() - t
    child_result({"n": n, "seconds": seconds, **memory})


def build(index: Path, n: int, dtype: str) -> None:
    import indexer
    from indexer.settings import Settings

    docs = ((f"doc-{i:07d}", f"document number {i}") for i in range(n))
    indexer.sync(index, docs,
                 indexer.SyncOptions(model=f"fake:{DIM}", dtype=dtype, settings=Settings(chunk_rows=1024)))


def check(index: Path, parquet: Path) -> bool:
    import numpy as np
    import pyarrow.parquet as pq

    import indexer

    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        expected_ids, expected = list(ids), np.asarray(vecs)
    table_ = pq.read_table(parquet)
    got = table_.column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
    return bool(table_.column("id").to_pylist() == expected_ids and got.tobytes() == expected.tobytes())


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["export"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[25_000, 100_000])
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--format", default="parquet", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "export":
        child(args.index, args.out, args.format)
        return

    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="bench-export-"))
    rows: list[list[object]] = []
    try:
        for n in args.sizes:
            for dtype in ("float32", "float16"):
                index = tmp / f"ix-{n}-{dtype}"
                build(index, n, dtype)
                base = run_child(__name__, "export", ["--index", str(index)])
                rows.append([f"{n:,}", dtype, "open + ids only", "-", base["seconds"], base["peak_rss_mb"],
                             base["peak_anon_mb"], "-", "-"])
                for fmt in ("npy", "parquet"):
                    out = tmp / f"v-{dtype}.{fmt}"
                    got = run_child(__name__, "export", ["--index", str(index), "--out", str(out),
                                                         "--format", fmt])
                    assert got["n"] == n, got
                    same = ("yes" if check(index, out) else "NO") if fmt == "parquet" else "-"
                    rows.append([f"{n:,}", dtype, fmt, f"{out.stat().st_size / 2**20:.1f}", got["seconds"],
                                 got["peak_rss_mb"], got["peak_anon_mb"],
                                 got["peak_anon_mb"] - base["peak_anon_mb"], same])
                    print(rows[-1], flush=True)
                shutil.rmtree(index)
        vectors_mb = max(args.sizes) * DIM * 4 / 2**20
        body = [
            f"`Index.export` of {' and '.join(f'{n:,}' for n in args.sizes)} documents, fake:{DIM} "
            "vectors, each export in a fresh process. "
            f"The float32 vectors of {max(args.sizes):,} are {vectors_mb:.0f} MiB. Peak RSS (VmHWM) counts "
            "the pages of "
            "the memory-mapped chunk files read (page cache, up to 256 chunks mapped at once) and, for "
            ".npy, of the memory-mapped output; anonymous memory (RssAnon, sampled every 5 ms) is what "
            "the process itself holds. \"anon over baseline\" is that less the peak of a process that "
            "only opens the index and reads its ids. Parquet is written in row groups of 8 MiB of "
            "vectors (5,461 rows of float32 here). See bench/cases/export.py.", "",
            table(["N", "dtype", "format", "file MiB", "seconds", "peak RSS MB", "peak anon MB",
                   "anon over baseline MB", "round trip bit-equal"], rows)]
        report.publish("export", "Export to .npy and Parquet: peak memory", body, write=not args.no_results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

