"""Time and memory of `indexer push` to a local LanceDB directory (fake model, 384 dims).

    python bench/bench_push.py                 # 100,000 documents
    python bench/bench_push.py --n 20000 --no-results

An index of N documents is built (fake:384, not timed). Then, each in a fresh child process: the first
push (everything), a push after one document changed (one upsert), a push with nothing to send, and a
push after 1% of the documents were deleted. Each child reports its wall time for `push()`, what it
sent, and its peak RSS (VmHWM) and peak anonymous memory (RssAnon, sampled every 5 ms). After the
last push the table is compared with `vectors()`, ids and vectors bit for bit.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    anon_peak,
    child_result,
    contention_note,
    machine,
    machine_markdown,
    run_child,
    table,
    update_results,
)

DIM = 384


def child(index: Path, target: str) -> None:
    t = time.perf_counter()
    import lancedb  # noqa: F401  (timed apart: a second or more, whatever the push)

    from indexer.push import push

    import_s = time.perf_counter() - t
    with anon_peak() as memory:
        t = time.perf_counter()
        report = push(index, target)
        seconds = time.perf_counter() - t
    child_result({"seconds": seconds, "import_s": import_s, "upserted": report.upserted,
                  "deleted": report.deleted, "rows": report.rows, **memory})


def sync(index: Path, n: int, changed: int = -1, deleted: int = 0) -> None:
    import indexer
    from indexer.settings import Settings

    docs = ((f"doc-{i:07d}", f"document number {i}" + (" changed" if i == changed else ""))
            for i in range(deleted, n))
    indexer.sync(index, docs, model=f"fake:{DIM}", delete_missing=True, settings=Settings(chunk_rows=1024))


def equal(index: Path, db: Path) -> bool:
    import lancedb
    import numpy as np

    import indexer

    with indexer.open(index) as idx:
        ids, vecs = idx.vectors()
        expected = dict(zip(list(ids), np.asarray(vecs), strict=True))
    rows = lancedb.connect(str(db)).open_table("vectors").to_arrow()
    got = rows.column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
    got_ids = rows.column("id").to_pylist()
    return sorted(got_ids) == sorted(expected) and all(
        got[i].tobytes() == expected[doc_id].tobytes() for i, doc_id in enumerate(got_ids))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.index, args.target)

    info, note = machine(), contention_note()
    script = str(Path(__file__).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    index, db = tmp / "ix", tmp / "lance"
    rows = []
    try:
        n = args.n
        gone = n // 100
        steps = [("first push", lambda: sync(index, n)),
                 ("after 1 changed document", lambda: sync(index, n, changed=7)),
                 ("nothing to send", lambda: None),
                 (f"after {gone:,} deleted documents", lambda: sync(index, n, changed=7, deleted=gone))]
        for label, prepare in steps:
            prepare()
            got = run_child([script, "--child", "--index", str(index), "--target", f"lancedb:{db}"])
            rows.append([label, got["upserted"], got["deleted"], got["rows"], got["seconds"],
                         got["import_s"], got["peak_rss_mb"], got["peak_anon_mb"]])
            print(rows[-1], flush=True)
        same = equal(index, db)
        body = "\n".join([
            f"`indexer.push.push(index, \"lancedb:DIR\")` of an index of {n:,} documents (fake:{DIM}, "
            "float32), each push in a fresh process; `seconds` is the push() call, lancedb's import "
            "(before it) is apart. "
            f"Table equal to `vectors()` bit for bit after the last push: {'yes' if same else 'NO'}. "
            "See bench/bench_push.py.", "",
            table(["push", "upserted", "deleted", "table rows", "seconds", "import lancedb s", "peak RSS MB",
                   "peak anon MB"],
                  rows),
            "", "Machine:", "", machine_markdown(info)])
        print(body)
        if not args.no_results:
            update_results("push", "Push to LanceDB: first push, one change, nothing, deletes", body,
                           provisional=note)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
