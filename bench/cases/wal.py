"""Disk used by the manifest during and after a sync: the peak size of its write-ahead log.

    python -m bench wal                      # 50k docs, fake:64, INDEXER_CHUNK_ROWS=256, vs --baseline
    python -m bench wal --n 20000 --baseline "" --no-results

Each library (this tree, and the --baseline ref, default the merge base with main, via `git archive`)
runs, in child processes, on the first N documents of corpus_100000.jsonl (the build_corpus case):
`indexer sync` into a fresh index with the fake model, while this process samples the size of
manifest.sqlite-wal every few milliseconds; then a resync of the first half with --delete-missing and
`indexer compact`. Reported: the WAL's peak during the first sync and its size after it, the sizes of
the manifest and the store, the manifest after compact, and the wall times.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .._common import DATA, Report, add_baseline_option, case_parser, child_env, libraries, table
from .._corpus import corpus_of

MB = 1e6


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed_cli(args: list[str], lib: Path, env: dict[str, str],
              watch: Path | None = None) -> tuple[float, int]:
    """Run `python -m indexer ARGS` with the library at `lib` (from that directory: `-m` puts the working
    directory first on the path); (seconds, peak size of `watch`)."""
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            if watch is not None:
                peak = max(peak, size(watch))
            done.wait(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "indexer", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, cwd=lib)
    finally:
        done.set()
        sampler.join()
    return time.perf_counter() - t, peak


def measure(lib: Path, corpus: Path, half: Path, dim: int, chunk_rows: int, tmp: Path,
            wal_limit_mib: int | None) -> dict[str, float]:
    ix = tmp / "ix"
    shutil.rmtree(ix, ignore_errors=True)
    env = child_env(lib, {"INDEXER_CHUNK_ROWS": str(chunk_rows)})
    env.pop("INDEXER_WAL_LIMIT_MIB", None)
    if wal_limit_mib is not None:
        env["INDEXER_WAL_LIMIT_MIB"] = str(wal_limit_mib)
    sync_s, wal_peak = timed_cli(["sync", str(corpus), "--index", str(ix), "--model", f"fake:{dim}", "-q"],
                                 lib, env, ix / "manifest.sqlite-wal")
    out = {"sync_s": sync_s, "wal_peak": wal_peak, "wal_after": size(ix / "manifest.sqlite-wal"),
           "manifest": size(ix / "manifest.sqlite"), "store": tree_size(ix / "vectors.zarr")}
    resync_s, resync_peak = timed_cli(["sync", str(half), "--index", str(ix), "--model", f"fake:{dim}",
                                       "--delete-missing", "-q"], lib, env, ix / "manifest.sqlite-wal")
    out.update(resync_s=resync_s, resync_wal_peak=resync_peak,
               manifest_before_compact=size(ix / "manifest.sqlite"))
    compact_s, _ = timed_cli(["compact", str(ix)], lib, env)
    out.update(compact_s=compact_s, manifest_after_compact=size(ix / "manifest.sqlite"),
               wal_after_compact=size(ix / "manifest.sqlite-wal"))
    shutil.rmtree(ix, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--chunk-rows", type=int, default=256)
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding corpus_100000.jsonl")
    add_baseline_option(ap)
    ap.add_argument("--wal-limits", type=int, nargs="*", default=[],
                    help="also run this tree with these INDEXER_WAL_LIMIT_MIB values")
    args = ap.parse_args(argv)
    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="bench-wal-"))
    try:
        libs = libraries(args.baseline, tmp)
        corpus = corpus_of(args.n, args.data.resolve(), tmp)
        half = corpus_of(args.n // 2, args.data.resolve(), tmp)
        runs: list[tuple[str, Path, int | None]] = [(label, lib, None) for label, lib in libs]
        runs += [(f"this tree, wal_limit_mib={m}", libs[-1][1], m) for m in args.wal_limits]
        rows: list[list[object]] = []
        for label, lib, limit in runs:
            got = measure(lib, corpus, half, args.dim, args.chunk_rows, tmp, limit)
            print(label, got, flush=True)
            rows.append([label, f"{got['wal_peak'] / MB:.1f}", f"{got['wal_after'] / MB:.1f}",
                         f"{got['manifest'] / MB:.1f}", f"{got['store'] / MB:.1f}", f"{got['sync_s']:.1f}",
                         f"{got['resync_wal_peak'] / MB:.1f}", f"{got['manifest_before_compact'] / MB:.1f}",
                         f"{got['manifest_after_compact'] / MB:.1f}", f"{got['compact_s']:.1f}"])
        headers = ["library", "WAL peak MB (sync)", "WAL after MB", "manifest MB", "store MB", "sync s",
                   "WAL peak MB (resync)", "manifest MB before compact", "manifest MB after compact",
                   "compact s"]
        body = [
            f"`indexer sync` of the first {args.n:,} documents of corpus_100000.jsonl into a fresh index, "
            f"--model fake:{args.dim}, INDEXER_CHUNK_ROWS={args.chunk_rows}; the WAL sampled every 5 ms. "
            f"Then a resync of the first {args.n // 2:,} with --delete-missing, and `indexer compact`. "
            "One run each. See bench/cases/wal.py.", "", table(headers, rows)]
        report.publish("wal", "Manifest disk use: WAL peak during a sync, VACUUM by compact", body,
                       write=not args.no_results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

