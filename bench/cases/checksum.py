"""What chunk checksums cost: XXH3-64 of a chunk and of its rows, against writing and reading the chunk.

The hash of a chunk (and of each of its rows) against writing the chunk durably and against reading
it, for the default chunk (1024 rows x 384 float32, 1.5 MiB).

    python -m bench checksum                 # writes the "checksum" section of bench/RESULTS.md
    python -m bench checksum --no-results

Each figure is the median of --repeat timings in this process, on a store in a temporary directory
(the page cache warm: the cost of the hash itself, not of the disk). crc32c (google-crc32c, Zarr v3's
checksum codec) is timed on the same bytes for comparison.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .._common import Report, case_parser, table


def median_us(fn: Callable[[], object], repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    from indexer.store import VectorStore, checksum

    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        store = VectorStore.create(Path(tmp) / "v.zarr", args.dim, "float32", args.rows)
        store.ensure_chunks(1)
        block = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype("<f4")
        data = block.tobytes()
        store.write_chunk(0, block)
        rows = [
            ["XXH3-64 of the chunk (what readers check)", median_us(lambda: checksum(data), args.repeat)],
            ["XXH3-64 of the chunk and of each row (recorded at commit)",
             median_us(lambda: store.checksums_of(data), args.repeat)],
        ]
        try:
            import google_crc32c

            rows.append(["crc32c of the chunk (google-crc32c, for comparison)",
                         median_us(lambda: google_crc32c.value(data), args.repeat)])
        except ImportError:
            pass
        rows += [
            ["write_chunk: temp file, fsync, rename, fsync dirs (checksums included)",
             median_us(lambda: store.write_chunk(0, block), args.repeat)],
            ["read the chunk file (page cache)",
             median_us(lambda: store.chunk_path(0).read_bytes(), args.repeat)],
            ["verify's read of one chunk: bytes, checksums, row compare",
             median_us(lambda: store.read_chunk_checked(0, store.checksums_of(data)), args.repeat)],
        ]
    mib = args.rows * args.dim * 4 / 2**20
    body = [
        f"One chunk of {args.rows} rows x {args.dim} float32 ({mib:.1f} MiB), median of {args.repeat}. "
        "See bench/cases/checksum.py.", "",
        table(["operation", "microseconds"], [[name, f"{us:,.0f}"] for name, us in rows])]
    report.publish("checksum", "Chunk checksums: cost of XXH3-64 against writing and reading a chunk", body,
                   write=not args.no_results)

