"""The driver with the process pool (issue 11, item 3): does `--backend processes` keep its workers busy?

    python bench/bench_pool.py                                  # 100k docs, 2 workers
    python bench/bench_pool.py --sizes 20000 --workers 2 --no-results

Part 1, a full sync: `indexer.sync(fresh index, paths=[corpus], model="fake:384", backend=B)` for B =
inline and B = processes (`--workers N`), each run in a fresh process, backends alternating. For each:
docs/s of the whole sync and of the embed phase (SyncSummary.embed_seconds: claim -> embed -> write ->
commit, nothing to scan; for processes it includes starting the workers, given apart as "workers
start": ProcessRunner's construction, until the first worker has loaded the model), the driver's
seconds in claim (Manifest.claim_many), write (_driver.Writing.written: the driver's wait for the chunk
files, fsynced) and commit (Manifest.commit_many), and the workers' time from backend_stats:
`idle_share` (no claim in hand, from each worker's first claim to the end) and `starved_share` (idle
while work was pending: between a result and the worker's next claim, or after its last claim while
the driver still handed out claims). The fake model costs next to nothing, so a high starved share
here says the driver does not keep up with the workers.

Part 2, the pool alone, no driver: `--pool-claims` claims of `--pool-rows` texts (the size of a group
the driver submits with the fake model) submitted at once to a ProcessRunner (fake:384), so that work is
always queued: docs/s and the starved share with one claim per worker (the default) and two
(`claims_per_worker=2`). Here any starved time is the runner's own hand-over between claims.

Corpus: the first N lines of corpus_100000.jsonl (see bench/bench_driver.py, `--data`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA,
    CallTimer,
    child_result,
    contention_note,
    machine,
    machine_markdown,
    run_child,
    table,
    update_results,
)
from bench_driver import corpus_of

WORK_TIME = ("busy_seconds_per_worker", "idle_seconds_per_worker", "starved_seconds_per_worker",
             "idle_share", "starved_share")


# -- children ----------------------------------------------------------------------------------------

def child_sync(corpus: Path, index: Path, dim: int, backend: str, workers: int) -> None:
    start = time.perf_counter()
    import indexer
    from indexer.manifest import Manifest
    from indexer.runners.processes import ProcessRunner

    timer = CallTimer()
    timer.wrap(Manifest, "claim_many", "claim")
    timer.wrap(Manifest, "commit_many", "commit")
    timer.wrap(importlib.import_module("indexer._driver").Writing, "written", "write")  # the driver's wait
    timer.wrap(ProcessRunner, "__init__", "workers start")
    shutil.rmtree(index, ignore_errors=True)
    options: dict[str, object] = {"workers": workers} if backend == "processes" else {}
    s = indexer.sync(index, paths=[str(corpus)], model=f"fake:{dim}", backend=backend,
                     backend_options=options)
    total = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined by then
    with indexer.open(index) as idx:
        st = idx.status()
    shutil.rmtree(index, ignore_errors=True)
    child_result({"total_s": total, "scan_s": s.scan_seconds, "embed_s": s.embed_seconds,
                  "driver_cpu_s": own.ru_utime + own.ru_stime,
                  "workers_cpu_s": children.ru_utime + children.ru_stime, "done": st["done"],
                  "pending": st["pending"], "claims": s.claims, "spent": timer.spent,
                  "stats": {k: s.backend_stats.get(k) for k in WORK_TIME}})


def child_pool(dim: int, workers: int, claims_per_worker: int, claims: int, rows: int) -> None:
    from indexer.runners.processes import make

    runner = make(f"fake:{dim}", 32, {}, workers=workers, claims_per_worker=claims_per_worker)
    try:
        runner.wait_ready()
        batches = [[f"claim {c} text {i} " * 4 for i in range(rows)] for c in range(claims)]
        start = time.perf_counter()
        for future in [runner.submit(texts) for texts in batches]:
            future.result()
        seconds = time.perf_counter() - start
    finally:
        runner.close()
    stats = runner.stats()
    child_result({"seconds": seconds, "stats": {k: stats[k] for k in WORK_TIME}})


# -- parent ------------------------------------------------------------------------------------------

def share(x: object) -> str:
    return f"{x:.1%}" if isinstance(x, float) else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--workers", type=int, default=2, help="processes backend: worker processes (default 2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size and backend (default 1); best kept")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the corpora")
    ap.add_argument("--pool-claims", type=int, default=40, help="part 2: claims submitted at once")
    ap.add_argument("--pool-rows", type=int, default=8192, help="part 2: texts a claim")
    ap.add_argument("--pool-repeat", type=int, default=5, help="part 2: runs of each (default 5); best kept")
    ap.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--child", choices=["sync", "pool"], help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--claims-per-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "sync":
        return child_sync(args.corpus, args.index, args.dim, args.backend, args.workers)
    if args.child == "pool":
        return child_pool(args.dim, args.workers, args.claims_per_worker, args.pool_claims, args.pool_rows)

    info = machine()
    note = contention_note()
    load_start = os.getloadavg()
    script = str(Path(__file__).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    backends = ["inline", "processes"]
    try:
        rows = []
        for n in args.sizes:
            corpus = corpus_of(n, args.data, tmp)
            best: dict[str, dict] = {}
            for r in range(args.repeat):
                for backend in (backends if r % 2 == 0 else backends[::-1]):
                    got = run_child([script, "--child", "sync", "--corpus", str(corpus), "--index",
                                     str(tmp / "ix"), "--dim", str(args.dim), "--backend", backend,
                                     "--workers", str(args.workers)])
                    if got["done"] != n or got["pending"] != 0:
                        raise RuntimeError(f"{backend}: incomplete sync of {n}: {got}")
                    st = got["stats"]
                    print(f"N={n:,} {backend}: {got['total_s']:.2f}s, embed phase {got['embed_s']:.2f}s "
                          f"({n / got['embed_s']:,.0f} docs/s), idle {share(st['idle_share'])}, starved "
                          f"{share(st['starved_share'])}", flush=True)
                    if backend not in best or got["embed_s"] < best[backend]["embed_s"]:
                        best[backend] = got
            for backend in backends:
                g, spent = best[backend], best[backend]["spent"]
                st = g["stats"]
                label = f"processes, {args.workers} workers" if backend == "processes" else backend
                start_s = spent.get("workers start", 0.0)
                rows.append([f"{n:,}", label, round(n / g["total_s"]), round(n / g["embed_s"]), g["embed_s"],
                             f"{start_s:.2f}" if start_s else "-",
                             round(n / (g["embed_s"] - start_s)) if start_s else "-",
                             spent.get("claim", 0.0), spent.get("write", 0.0), spent.get("commit", 0.0),
                             g["driver_cpu_s"], g["workers_cpu_s"] if backend == "processes" else "-",
                             share(st["idle_share"]), share(st["starved_share"]),
                             ", ".join(f"{b:.2f}" for b in st["busy_seconds_per_worker"] or []) or "-"])
        pool_best: dict[int, dict] = {}
        texts = args.pool_claims * args.pool_rows
        for r in range(args.pool_repeat):
            for per_worker in ((1, 2) if r % 2 == 0 else (2, 1)):
                got = run_child([script, "--child", "pool", "--dim", str(args.dim), "--workers",
                                 str(args.workers), "--claims-per-worker", str(per_worker), "--pool-claims",
                                 str(args.pool_claims), "--pool-rows", str(args.pool_rows)])
                starved = share(got["stats"]["starved_share"])
                print(f"pool alone, {per_worker} claim(s) per worker: {got['seconds']:.2f}s "
                      f"({texts / got['seconds']:,.0f} docs/s), starved {starved}", flush=True)
                if per_worker not in pool_best or got["seconds"] < pool_best[per_worker]["seconds"]:
                    pool_best[per_worker] = got
        pool_rows = [[k, round(texts / g["seconds"]), g["seconds"], share(g["stats"]["idle_share"]),
                      share(g["stats"]["starved_share"])] for k, g in sorted(pool_best.items())]
        load_end = os.getloadavg()
        headers = ["N", "backend", "docs/s (whole sync)", "docs/s (embed phase)", "embed phase s",
                   "workers start s", "docs/s (embed phase less workers start)", "claim s", "write s",
                   "commit s", "driver cpu s", "workers cpu s", "workers idle", "workers starved",
                   "busy s per worker"]
        body = [f"Part 1: full `indexer.sync(paths=[corpus], model=\"fake:{args.dim}\", backend=B)` into a "
                f"fresh index, default settings, best embed phase of {args.repeat} per backend, each run in "
                "its own process, backends alternating. Workers idle: share of the workers' time (from "
                "each one's first claim to the end) with no claim in hand; starved: the part of it while "
                "work was pending (the driver still handed out claims). See bench/bench_pool.py.", "",
                table(headers, rows), "",
                f"Part 2: the pool alone ({args.workers} workers, fake:{args.dim}), {args.pool_claims} "
                f"claims of {args.pool_rows:,} texts submitted at once, so work is always queued; nothing "
                f"written; best of {args.pool_repeat} runs each, alternating:", "",
                table(["claims per worker", "docs/s", "seconds", "workers idle", "workers starved"],
                      pool_rows), "",
                f"Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_start)} at the start, "
                f"{', '.join(f'{x:.2f}' for x in load_end)} at the end.", "",
                "Machine:", "", machine_markdown(info)]
        text = "\n".join(body)
        print(text)
        if not args.no_results:
            update_results("pool", "Driver with the process pool: worker idle time (issue 11, item 3)", text,
                           provisional=note)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
