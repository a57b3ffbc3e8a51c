"""Throughput of the local backends by configuration against sentence-transformers' own pool.

On one real corpus.

    python -m bench backends                       # 2,000 documents, all-MiniLM-L6-v2
    python -m bench backends --n 500 --no-results  # a quick look; RESULTS.md untouched
    python -m bench backends --configs inline-1x2,processes-2x1
    python -m bench backends --ray                 # add the Ray backend's row (the ray_backend case)

Configurations (N processes x T torch threads each):
    inline-1x1, inline-1x2     indexer, the model in the driver process (`--backend inline`)
    processes-1x2, -2x1        indexer's process pool (`--backend processes --workers N
                               --threads-per-worker T`); timed once every worker has loaded the model
    st-pool-2                  the peer: sentence-transformers' own `start_multi_process_pool(["cpu"] * 2)`
                               and `encode(..., pool=pool)`, as its documentation shows (each worker's
                               torch keeps its default thread count: all cores)
    st-pool-2-pinned           the same with OMP/MKL_NUM_THREADS=1 in the environment, i.e. pinned the
                               way indexer pins its workers
Each configuration runs in its own fresh child process (bench/_common.py, run_child). indexer rows embed
through a full `sync` into a fresh index (claim, embed, write chunk durably, commit): `embed s` is the
sync's embed_seconds. The st-pool rows only encode (no index, nothing written): the same texts, warm
workers. docs/s = documents / embed s. Scaling efficiency = docs/s / (N x T x docs/s of inline-1x1): 1.0
means every added core helped fully. Peak RSS is the driver's (getrusage) and each worker's (sampled
every 0.1 s with psutil). `max abs diff` compares each row's vectors with inline-1x2's, document by
document.

Hook for other backends: MEASUREMENTS maps a name to a function(args, corpus, scratch, reference index)
returning a row dict (see `row()` for the keys); `--ray` adds the ray_backend case's `ray_measurement`
through it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._common import (
    Report,
    Result,
    RssSampler,
    case_parser,
    child_result,
    run_child,
    table,
    usable_cores,
    vectors_by_id,
)
from .._corpus import ensure_corpus, read_texts

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PINNED = {var: "1" for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
# name -> (processes, threads each)
CONFIGS: dict[str, tuple[int, int]] = {
    "inline-1x1": (1, 1),
    "inline-1x2": (1, 2),
    "processes-1x2": (1, 2),
    "processes-2x1": (2, 1),
    "st-pool-2": (2, 0),  # 0: torch's default (all cores) in each worker
    "st-pool-2-pinned": (2, 1),
}
REFERENCE = "inline-1x2"
BASELINE = "inline-1x1"


# -- child -----------------------------------------------------------------------------------------------

def child_indexer(name: str, corpus: str, index_dir: str, model: str, chunk_rows: int) -> None:
    from indexer import SyncOptions, sync
    from indexer.runners import make_runner
    from indexer.runners.processes import ProcessRunner
    from indexer.settings import Settings

    n, threads = CONFIGS[name]
    settings = Settings(chunk_rows=chunk_rows)
    t = time.perf_counter()
    if name.startswith("inline"):
        import torch

        torch.set_num_threads(threads)
        runner = make_runner("inline", model, batch_size=settings.batch_size)
        sampler = RssSampler(list)
    else:
        runner = make_runner("processes", model, batch_size=settings.batch_size, workers=n,
                             threads_per_worker=threads)
        assert isinstance(runner, ProcessRunner)
        sampler = RssSampler(lambda: [p for p in runner.pids if p])
        runner.wait_ready()
    startup = time.perf_counter() - t
    summary = sync(index_dir, paths=[corpus], options=SyncOptions(settings=settings),
                   runner=runner)  # closes the runner
    child_result({"config": name, "startup_s": startup, "embed_s": summary.embed_seconds,
                  "embedded": summary.embedded, "claims": summary.claims,
                  "worker_peaks_mb": sampler.stop()})


def child_st_pool(name: str, corpus: str, out: str, model: str, batch_size: int) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from indexer.embedders.sentence_transformers import resolve_model_path

    n, _ = CONFIGS[name]
    _, texts = read_texts(Path(corpus))
    t = time.perf_counter()
    st = SentenceTransformer(resolve_model_path(model), device="cpu")
    pool = st.start_multi_process_pool(["cpu"] * n)
    sampler = RssSampler(lambda: [p.pid for p in pool["processes"] if p.pid])
    st.encode(texts[:8 * n], pool=pool, batch_size=batch_size, chunk_size=8)  # every worker warm
    startup = time.perf_counter() - t
    t = time.perf_counter()
    vectors = st.encode(texts, pool=pool, batch_size=batch_size)
    embed = time.perf_counter() - t
    st.stop_multi_process_pool(pool)
    np.save(out, np.asarray(vectors, dtype=np.float32))
    child_result({"config": name, "startup_s": startup, "embed_s": embed, "embedded": len(texts),
                  "claims": "-", "worker_peaks_mb": sampler.stop()})


# -- parent ----------------------------------------------------------------------------------------------

def measure(name: str, corpus: Path, scratch: Path, model: str, chunk_rows: int,
            batch_size: int) -> Result:
    out = scratch / name
    common = ["--corpus", str(corpus), "--model", model, "--chunk-rows", str(chunk_rows),
              "--batch-size", str(batch_size)]
    env = PINNED if name.endswith("-pinned") else None
    result = run_child(__name__, name, ["--out", str(out), *common], env=env)
    result["out"] = str(out)
    return result


def served(path: Path, ids: list[str]) -> Any:
    """The vectors of an index (a directory) or of an st-pool run (.npy), in corpus order."""
    import numpy as np

    if path.with_suffix(".npy").exists():
        return np.load(path.with_suffix(".npy")).astype(np.float64)
    return vectors_by_id(path, ids)


def max_abs_diff(a: Path, b: Path, corpus: Path) -> float:
    import numpy as np

    ids, _ = read_texts(corpus)
    return float(np.abs(served(a, ids) - served(b, ids)).max())


def ray_row(args: argparse.Namespace, corpus: Path, scratch: Path, reference: Path | None) -> dict[str, Any]:
    """The Ray backend through the ray_backend case (its `ray_measurement`), as a row of this table."""
    from .ray_backend import ray_measurement

    r = ray_measurement(corpus, args.model, 2, args.chunk_rows, reference, scratch)
    return {"config": "ray-2 (local Ray, 2 actors)", "procs": 2, "threads": "auto",
            "startup_s": r["startup_s"], "embed_s": r["embed_s"], "embedded": r["embedded"],
            "claims": r["claims"], "peak_rss_mb": r["peak_rss_mb"], "worker_peaks_mb": [],
            "max_abs_diff": r.get("max_abs_diff", "-"), "wall_s": r["wall_s"]}


# Extra rows by name (the hook for other backends): function(args, corpus, scratch, reference index).
MEASUREMENTS: dict[str, Callable[[argparse.Namespace, Path, Path, Path | None], dict[str, Any]]] = {
    "ray": ray_row,
}

HEADERS = ["configuration", "procs x threads", "start-up s", "embed s", "docs/s", "scaling efficiency",
           "driver peak RSS MB", "worker peak RSS MB (each)", "total peak RSS MB", "max abs diff vs "
           + REFERENCE]


def row(r: dict[str, Any], baseline_rate: float | None) -> list[object]:
    rate = r["embedded"] / r["embed_s"] if r["embed_s"] else 0.0
    procs, threads = CONFIGS.get(r["config"], (r.get("procs", 0), r.get("threads", 0)))
    cpus = usable_cores()
    cores = procs * (threads or cpus) if isinstance(threads, int) else None
    efficiency: object = "-"
    if baseline_rate and cores:
        efficiency = rate / (cores * baseline_rate)
    workers = r.get("worker_peaks_mb") or []
    each = " / ".join(f"{w:.0f}" for w in workers) if workers else "-"
    total = float(r["peak_rss_mb"]) + sum(workers)
    shape = f"{procs} x {threads if threads else 'all'}"
    diff = r.get("max_abs_diff", "-")
    return [r["config"], shape, float(r["startup_s"]), float(r["embed_s"]), rate, efficiency,
            float(r["peak_rss_mb"]), each, total, f"{diff:.1e}" if isinstance(diff, float) else diff]


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=list(CONFIGS))
    ap.add_argument("--n", type=int, default=2000, help="documents (a build_corpus corpus)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated; default: all")
    ap.add_argument("--chunk-rows", type=int, default=128, help="rows per claim (default 128)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--ray", action="store_true", help="add the Ray backend (needs ray installed)")
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        if args.child.startswith("st-pool"):
            child_st_pool(args.child, args.corpus, args.out + ".npy", args.model, args.batch_size)
        else:
            child_indexer(args.child, args.corpus, args.out, args.model, args.chunk_rows)
        return

    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        ap.error(f"unknown configuration(s) {', '.join(unknown)}; choose from {', '.join(CONFIGS)}")
    report = Report()
    corpus = ensure_corpus(args.n)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as tmp:
        scratch = Path(tmp)
        for name in names:
            r = measure(name, corpus, scratch, args.model, args.chunk_rows, args.batch_size)
            results.append(r)
            print(json.dumps(r), flush=True)
        reference = scratch / REFERENCE if REFERENCE in names else None
        for r in results:
            if reference is not None:
                r["max_abs_diff"] = max_abs_diff(Path(r["out"]), reference, corpus)
        extras = ["ray"] if args.ray else []
        for extra in extras:
            r = MEASUREMENTS[extra](args, corpus, scratch, reference)
            results.append(r)
            print(json.dumps(r), flush=True)
    base = next((r for r in results if r["config"] == BASELINE), None)
    baseline_rate = base["embedded"] / base["embed_s"] if base else None
    body = [
        f"Corpus: {args.n} documents of `{corpus.name}` (build_corpus), model {args.model}, "
        f"batch size {args.batch_size}, claims of {args.chunk_rows} rows, each configuration in its own "
        "fresh process. indexer rows: a full sync into a fresh index, `embed s` = claim + embed + write + "
        "commit (start-up, i.e. loading the model in every worker, is apart); st-pool rows: "
        "sentence-transformers' multi-process pool encoding the same texts, warm, nothing written. "
        f"Scaling efficiency = docs/s / (processes x threads x docs/s of {BASELINE}); an unpinned "
        "st-pool worker counts as all of this machine's cores. See bench/cases/backends.py.",
        table(HEADERS, [row(r, baseline_rate) for r in results]),
    ]
    report.publish("backends", "Backends on one machine: in-process, process pool, and the "
                   "sentence-transformers pool", body, write=not args.no_results)

