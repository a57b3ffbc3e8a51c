"""Time and memory of `indexer push` to a local LanceDB directory (fake model, 384 dims).

    python -m bench push                          # 100,000 one-chunk documents, one row each
    python -m bench push --n 25000 --chunks 4     # 25,000 documents of 4 chunks, one row a chunk
    python -m bench push --n 20000 --no-results

An index of N documents is built (fake:384, not timed); with --chunks K each document is K paragraphs
of 8 words, cut into K chunks (--chunk-tokens 8: the fake model counts words). Then, each in a fresh
child process: the first push (everything), a push after one document changed (one upsert; with
--chunks, to one chunk fewer, so that its last row must go), a push with nothing to send, a push after
1% of the documents changed (as the one), and a push after 1% of the documents were deleted. --level
documents|chunks is given to every push (default: push's own, chunks for these chunked indexes). Each
child reports its wall time for `push()`, what it sent, and its peak RSS (VmHWM) and peak anonymous
memory (RssAnon, sampled every 5 ms). After the last push the table is compared with the index
(`vectors()`, or `chunks()` at chunk level), bit for bit.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._common import Report, anon_peak, case_parser, child_result, run_child, table

DIM = 384


def child(index: Path, target: str, level: str | None) -> None:
    t = time.perf_counter()
    import lancedb  # noqa: F401  (timed apart: a second or more, whatever the push)

    from indexer.push import push

    import_s = time.perf_counter() - t
    with anon_peak() as memory:
        t = time.perf_counter()
        report = push(index, target, level=level)
        seconds = time.perf_counter() - t
    child_result({"seconds": seconds, "import_s": import_s, "upserted": report.upserted,
                  "upserted_rows": report.upserted_rows, "deleted": report.deleted, "rows": report.rows,
                  "level": report.level, **memory})


def text(i: int, chunks: int, changed: bool) -> str:
    if chunks == 1:
        return f"document number {i}" + (" changed" if changed else "")
    # Paragraphs of 8 words, each one chunk at --chunk-tokens 8; a changed one loses its last.
    return "\n\n".join(f"document {i} paragraph {k} of a longer text" for k in range(chunks - changed))


def sync(index: Path, n: int, chunks: int, changed: range | set[int] = range(0), deleted: int = 0) -> None:
    import indexer
    from indexer.settings import Settings

    docs = ((f"doc-{i:07d}", text(i, chunks, i in changed)) for i in range(deleted, n))
    indexer.sync(index, docs,
                 indexer.SyncOptions(model=f"fake:{DIM}", delete_missing=True,
                                     settings=Settings(chunk_rows=1024),
                                     chunk_tokens=8 if chunks > 1 else None))


def equal(index: Path, db: Path) -> bool:
    import lancedb
    import numpy as np

    import indexer

    rows = lancedb.connect(str(db)).open_table("vectors").to_arrow()
    got = rows.column("vector").combine_chunks().values.to_numpy().reshape(-1, DIM)
    with indexer.open(index) as idx:
        if "chunk" in rows.schema.names:
            c = idx.chunks()
            keys = list(zip(c.ids, c.ordinals.tolist(), c.starts.tolist(), c.ends.tolist(), strict=True))
            expected: dict[Any, Any] = dict(zip(keys, np.asarray(c.vectors), strict=True))
            got_keys = list(zip(*(rows.column(k).to_pylist() for k in ("id", "chunk", "start", "end")),
                                strict=True))
        else:
            ids, vecs = idx.vectors()
            expected = dict(zip(list(ids), np.asarray(vecs), strict=True))
            got_keys = rows.column("id").to_pylist()
    return sorted(got_keys) == sorted(expected) and all(
        got[i].tobytes() == expected[key].tobytes() for i, key in enumerate(got_keys))


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["push"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--chunks", type=int, default=1, help="chunks a document (paragraphs of 8 words)")
    ap.add_argument("--level", choices=["documents", "chunks"], help="push level (default: push's)")
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--target", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "push":
        child(args.index, args.target, args.level)
        return

    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="bench-push-"))
    index, db = tmp / "ix", tmp / "lance"
    rows: list[list[object]] = []
    try:
        n, k = args.n, args.chunks
        gone = n // 100
        many = {7, *range(n // 2, n // 2 + gone)}
        steps: list[tuple[str, Callable[[], None]]] = [("first push", lambda: sync(index, n, k)),
                 ("after 1 changed document", lambda: sync(index, n, k, changed={7})),
                 ("nothing to send", lambda: None),
                 (f"after {gone:,} changed documents", lambda: sync(index, n, k, changed=many)),
                 (f"after {gone:,} deleted documents", lambda: sync(index, n, k, changed=many, deleted=gone))]
        level = ""
        for label, prepare in steps:
            prepare()
            got = run_child(__name__, "push", ["--index", str(index), "--target", f"lancedb:{db}",
                                               *(["--level", args.level] if args.level else [])])
            level = str(got["level"])
            rows.append([label, got["upserted"], got["upserted_rows"], got["deleted"], got["rows"],
                         got["seconds"], got["import_s"], got["peak_rss_mb"], got["peak_anon_mb"]])
            print(rows[-1], flush=True)
        same = equal(index, db)
        what = f"{n:,} documents" + (f" of {k} chunks each (--chunk-tokens 8)" if k > 1 else "")
        call = 'indexer.push.push(index, "lancedb:DIR"' + (f", level={args.level!r})" if args.level else ")")
        body = [
            f"`{call}` "
            f"of an index of {what} (fake:{DIM}, float32), pushed at level {level} (one table row a "
            f"{level[:-1]}), each push in a fresh process; `seconds` is the push() call, lancedb's import "
            "(before it) is apart. `upserted` counts documents, `rows sent` table rows. "
            f"Table equal to the index bit for bit after the last push: {'yes' if same else 'NO'}. "
            "See bench/cases/push.py.", "",
            table(["push", "upserted", "rows sent", "deleted", "table rows", "seconds", "import lancedb s",
                   "peak RSS MB", "peak anon MB"],
                  rows)]
        key = ("push" if k == 1 else "push-chunks") + ("-documents" if args.level == "documents" else "")
        report.publish(key, f"Push to LanceDB, {what}, one row a {level[:-1]}: first push, changes, nothing, "
                       "deletes", body, write=not args.no_results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

