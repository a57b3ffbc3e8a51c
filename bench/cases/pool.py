"""The driver with the process pool: does `--backend processes` keep its workers busy? (issue 11, item 3)

    python -m bench pool                                        # 100k docs, 2 workers
    python -m bench pool --sizes 20000 --workers 2 --no-results

Part 1, a full sync: `indexer.sync(fresh index, paths=[corpus], options=SyncOptions(model="fake:384",
backend=B))` for B = inline and B = processes (`--workers N`), each run in a fresh process, backends
alternating. For each: docs/s of the whole sync and of the embed phase (SyncSummary.embed_seconds: claim
-> embed -> write -> commit, nothing to scan); "workers start": ProcessRunner's construction, until the
first worker has loaded the model, timed around its constructor (the library has no hook for it). A sync
of a fresh index makes its runner before the scan (the model's configuration goes into the new index),
so the workers' start is part of the whole sync, not of the embed phase. Then the driver's seconds in
claim, embed (handing groups to the runner and waiting for them), write (waiting for the chunk files,
fsynced) and commit, from the sync's own `SyncSummary.step_seconds`, and the workers' time from
backend_stats:
`idle_share` (no claim in hand, from each worker's first claim to the end) and `starved_share` (idle
while work was pending: between a result and the worker's next claim, or after its last claim while
the driver still handed out claims). The fake model costs next to nothing, so a high starved share
here says the driver does not keep up with the workers.

Part 2, the pool alone, no driver: `--pool-claims` claims of `--pool-rows` texts (the size of a group
the driver submits with the fake model) submitted at once to a ProcessRunner (fake:384), so that work is
always queued: docs/s and the starved share with one claim per worker (the default) and two
(`claims_per_worker=2`). Here any starved time is the runner's own hand-over between claims.

Corpus: the first N lines of corpus_100000.jsonl (see `python -m bench driver --help`, `--data`).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from .._common import DATA, CallTimer, Report, Result, case_parser, child_result, run_child, table
from .._corpus import corpus_of

WORK_TIME = ("busy_seconds_per_worker", "idle_seconds_per_worker", "starved_seconds_per_worker",
             "idle_share", "starved_share")
STEPS = ("claim", "embed", "write", "commit")


# -- children ----------------------------------------------------------------------------------------

def child_sync(corpus: Path, index: Path, dim: int, backend: str, workers: int) -> None:
    start = time.perf_counter()
    import indexer
    from indexer.runners.processes import ProcessRunner

    timer = CallTimer()  # the runner's start: no hook in the library, its (public) constructor timed
    timer.wrap(ProcessRunner, "__init__", "workers start")
    shutil.rmtree(index, ignore_errors=True)
    options: dict[str, object] = {"workers": workers} if backend == "processes" else {}
    s = indexer.sync(index, paths=[str(corpus)],
                     options=indexer.SyncOptions(model=f"fake:{dim}", backend=backend,
                                                 backend_options=options))
    total = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers, joined by then
    with indexer.open(index) as idx:
        st = idx.status()
    shutil.rmtree(index, ignore_errors=True)
    child_result({"total_s": total, "scan_s": s.scan_seconds, "embed_s": s.embed_seconds,
                  "driver_cpu_s": own.ru_utime + own.ru_stime,
                  "workers_cpu_s": children.ru_utime + children.ru_stime, "done": st["done"],
                  "pending": st["pending"], "claims": s.claims, "steps": dict(s.step_seconds),
                  "workers_start_s": timer.spent.get("workers start", 0.0),
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


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["sync", "pool"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000])
    ap.add_argument("--workers", type=int, default=2, help="processes backend: worker processes (default 2)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per size and backend (default 1); best kept")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the corpora")
    ap.add_argument("--pool-claims", type=int, default=40, help="part 2: claims submitted at once")
    ap.add_argument("--pool-rows", type=int, default=8192, help="part 2: texts a claim")
    ap.add_argument("--pool-repeat", type=int, default=5, help="part 2: runs of each (default 5); best kept")
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--claims-per-worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "sync":
        child_sync(args.corpus, args.index, args.dim, args.backend, args.workers)
        return
    if args.child == "pool":
        child_pool(args.dim, args.workers, args.claims_per_worker, args.pool_claims, args.pool_rows)
        return

    report = Report()
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    backends = ["inline", "processes"]
    try:
        rows: list[list[object]] = []
        for n in args.sizes:
            corpus = corpus_of(n, args.data.resolve(), tmp)
            best: dict[str, Result] = {}
            for r in range(args.repeat):
                for backend in (backends if r % 2 == 0 else backends[::-1]):
                    got = run_child(__name__, "sync", [
                        "--corpus", str(corpus), "--index", str(tmp / "ix"), "--dim", str(args.dim),
                        "--backend", backend, "--workers", str(args.workers)])
                    if got["done"] != n or got["pending"] != 0:
                        raise RuntimeError(f"{backend}: incomplete sync of {n}: {got}")
                    st = got["stats"]
                    print(f"N={n:,} {backend}: {got['total_s']:.2f}s, embed phase {got['embed_s']:.2f}s "
                          f"({n / got['embed_s']:,.0f} docs/s), idle {share(st['idle_share'])}, starved "
                          f"{share(st['starved_share'])}", flush=True)
                    if backend not in best or got["embed_s"] < best[backend]["embed_s"]:
                        best[backend] = got
            for backend in backends:
                g, steps = best[backend], best[backend]["steps"]
                st = g["stats"]
                label = f"processes, {args.workers} workers" if backend == "processes" else backend
                start_s = g["workers_start_s"]
                rows.append([f"{n:,}", label, round(n / g["total_s"]), round(n / g["embed_s"]), g["embed_s"],
                             f"{start_s:.2f}" if start_s else "-",
                             *(steps.get(k, 0.0) for k in STEPS),
                             g["driver_cpu_s"], g["workers_cpu_s"] if backend == "processes" else "-",
                             share(st["idle_share"]), share(st["starved_share"]),
                             ", ".join(f"{b:.2f}" for b in st["busy_seconds_per_worker"] or []) or "-"])
        pool_best: dict[int, Result] = {}
        texts = args.pool_claims * args.pool_rows
        for r in range(args.pool_repeat):
            for per_worker in ((1, 2) if r % 2 == 0 else (2, 1)):
                got = run_child(__name__, "pool", [
                    "--dim", str(args.dim), "--workers", str(args.workers), "--claims-per-worker",
                    str(per_worker), "--pool-claims", str(args.pool_claims),
                    "--pool-rows", str(args.pool_rows)])
                starved = share(got["stats"]["starved_share"])
                print(f"pool alone, {per_worker} claim(s) per worker: {got['seconds']:.2f}s "
                      f"({texts / got['seconds']:,.0f} docs/s), starved {starved}", flush=True)
                if per_worker not in pool_best or got["seconds"] < pool_best[per_worker]["seconds"]:
                    pool_best[per_worker] = got
        pool_rows = [[k, round(texts / g["seconds"]), g["seconds"], share(g["stats"]["idle_share"]),
                      share(g["stats"]["starved_share"])] for k, g in sorted(pool_best.items())]
        load_end = os.getloadavg()
        headers = ["N", "backend", "docs/s (whole sync)", "docs/s (embed phase)", "embed phase s",
                   "workers start s (before the scan)", "claim s", "embed s",
                   "write s", "commit s", "driver cpu s", "workers cpu s", "workers idle", "workers starved",
                   "busy s per worker"]
        body = [f"Part 1: full `indexer.sync(paths=[corpus], model=\"fake:{args.dim}\", backend=B)` into a "
                f"fresh index, default settings, best embed phase of {args.repeat} per backend, each run in "
                "its own process, backends alternating. Workers idle: share of the workers' time (from "
                "each one's first claim to the end) with no claim in hand; starved: the part of it while "
                "work was pending (the driver still handed out claims). claim, embed, write, commit: the "
                "driver's seconds in each step (`SyncSummary.step_seconds`); embed is handing groups to the "
                "runner and waiting for their vectors (for inline, the fake model's time). Workers start: "
                "the process pool's construction until its first worker has loaded the model, which a "
                "fresh index's sync does before the scan (in the whole sync, not in the embed phase). See "
                "bench/cases/pool.py.", "",
                table(headers, rows), "",
                f"Part 2: the pool alone ({args.workers} workers, fake:{args.dim}), {args.pool_claims} "
                f"claims of {args.pool_rows:,} texts submitted at once, so work is always queued; nothing "
                f"written; best of {args.pool_repeat} runs each, alternating:", "",
                table(["claims per worker", "docs/s", "seconds", "workers idle", "workers starved"],
                      pool_rows), "",
                f"Load average (1, 5, 15 min): {', '.join(f'{x:.2f}' for x in load_start)} at the start, "
                f"{', '.join(f'{x:.2f}' for x in load_end)} at the end."]
        report.publish("pool", "Driver with the process pool: worker idle time (issue 11, item 3)",
                       body, write=not args.no_results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

