"""How LanceDB can replace one document's chunk rows, by table size (needs lancedb).

Why targets/lancedb.py deletes then appends at chunk level instead of one merge_insert.

    python -m bench lance_replace                  # tables of 100,000 and 400,000 rows
    python -m bench lance_replace --rows 50000 --no-results

A table of N one-chunk rows (id, chunk, 384 float32) is written, then one document's rows are replaced
by 3 new ones, each way in a fresh child process: `merge+delete` (merge_insert on (id, chunk) with
when_not_matched_by_source_delete: one table version, the only one-step form that also removes chunk
rows the new version lacks), `delete+append` (two versions; what the target does), and `merge` (a
plain upsert on (id, chunk), which leaves stale rows: the cost floor, shown for comparison). Each
child reports the replace's wall time and its peak anonymous memory above what it had before.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from .._common import Report, anon_peak, case_parser, child_result, run_child, status_mb, table

DIM = 384
WAYS = ("merge+delete", "delete+append", "merge")


def _rows(pairs: list[tuple[str, int]]) -> object:
    import numpy as np
    import pyarrow as pa

    schema = pa.schema([pa.field("id", pa.string(), nullable=False),
                        pa.field("chunk", pa.int32(), nullable=False),
                        pa.field("vector", pa.list_(pa.float32(), DIM), nullable=False)])
    vectors = np.random.default_rng(len(pairs)).random((len(pairs), DIM), dtype=np.float32)
    return pa.Table.from_arrays([pa.array([i for i, _ in pairs], pa.string()),
                                 pa.array([k for _, k in pairs], pa.int32()),
                                 pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)],
                                schema=schema)


def build(db: Path, n: int) -> None:
    import lancedb

    conn = lancedb.connect(str(db))
    first = _rows([(f"d{i}", 0) for i in range(min(n, 50_000))])
    t = conn.create_table("v", first)
    for start in range(50_000, n, 50_000):
        t.add(_rows([(f"d{i}", 0) for i in range(start, min(n, start + 50_000))]))


def child(db: Path, way: str) -> None:
    import lancedb

    t = lancedb.connect(str(db)).open_table("v")
    new = _rows([("d7", k) for k in range(3)])
    before = status_mb("RssAnon")
    with anon_peak() as memory:
        t0 = time.perf_counter()
        if way == "merge+delete":
            (t.merge_insert(["id", "chunk"]).when_matched_update_all().when_not_matched_insert_all()
             .when_not_matched_by_source_delete("id IN ('d7')").execute(new))
        elif way == "delete+append":
            t.delete("id IN ('d7')")
            t.add(new)
        else:
            (t.merge_insert(["id", "chunk"]).when_matched_update_all().when_not_matched_insert_all()
             .execute(new))
        seconds = time.perf_counter() - t0
    child_result({"seconds": seconds, "anon_above_mb": memory["peak_anon_mb"] - before,
                  "rows": int(t.count_rows())})


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["replace"])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 400_000])
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "replace":
        child(args.db, args.way)
        return

    report = Report()
    rows: list[list[object]] = []
    for n in args.rows:
        for way in WAYS:
            tmp = Path(tempfile.mkdtemp(prefix="bench-lance-replace-"))
            try:
                build(tmp / "db", n)
                got = run_child(__name__, "replace", ["--db", str(tmp / "db"), "--way", way])
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            rows.append([n, way, got["seconds"], got["anon_above_mb"], got["rows"]])
            print(rows[-1], flush=True)
    import lancedb

    body = [
        "Replacing one document's chunk rows (1 row -> 3) in a LanceDB table "
        f"(lancedb {lancedb.__version__}) of N one-chunk rows of {DIM} float32, each way in a fresh "
        "process. `merge` leaves stale rows when a document loses chunks; it is the cost floor. See "
        "bench/cases/lance_replace.py.", "",
        table(["table rows", "way", "seconds", "peak anon MB above start", "rows after"], rows)]
    report.publish("lance-replace", "LanceDB: replacing a document's chunk rows, by table size", body,
                   write=not args.no_results)

