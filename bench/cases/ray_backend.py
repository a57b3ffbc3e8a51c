"""The Ray backend against the in-process one: same corpus, same model, a fresh index each.

    python -m bench ray_backend                      # 2,000 real-text documents, all-MiniLM-L6-v2, 2 workers
    python -m bench ray_backend --n 500 --no-results # a quick look, RESULTS.md untouched

Each measurement runs in its own child process (bench/_common.py, run_child). The Ray child starts a local
Ray instance through the runner, exactly as `indexer sync --backend ray --workers N` does, so its
start-up (Ray itself, then N actors each importing torch and loading the model) is measured apart from
the embedding. Also measured with the fake model (no model work): the per-claim cost of shipping texts
to actors and vectors back. The vectors of each Ray index are compared with the inline index's.

The backends case's Ray row (`python -m bench backends --ray`) is `ray_measurement()` below.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
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
    vectors_by_id,
)
from .._corpus import ensure_corpus

DEFAULT_MODEL = "all-MiniLM-L6-v2"


# -- child ---------------------------------------------------------------------------------------------

def child(mode: str, corpus: str, index_dir: str, model: str, workers: int, chunk_rows: int) -> None:
    from indexer import sync
    from indexer.runners import make_runner
    from indexer.settings import Settings

    settings = Settings(chunk_rows=chunk_rows)
    t = time.perf_counter()
    pids: list[int] = []
    if mode == "ray":
        runner = make_runner("ray", model, batch_size=settings.batch_size, workers=workers)
        pids = [slot.pid for slot in runner.slots]  # type: ignore[attr-defined]
    else:
        runner = make_runner("inline", model, batch_size=settings.batch_size)
    startup = time.perf_counter() - t
    peaks = RssSampler(lambda: pids)  # the actors' processes, while the sync runs
    # sync closes its runner inside its embed phase; for Ray that is a shutdown of the local instance
    # (seconds), so the runner is closed here instead and timed apart.
    summary = sync(index_dir, paths=[corpus], settings=settings, runner=_KeepOpen(runner))
    worker_peaks = peaks.stop()
    t = time.perf_counter()
    runner.close()
    shutdown = time.perf_counter() - t
    child_result({"mode": mode, "model": model, "workers": workers if mode == "ray" else 1,
                  "startup_s": startup, "shutdown_s": shutdown, "scan_s": summary.scan_seconds,
                  "embed_s": summary.embed_seconds,
                  "sync_s": summary.seconds, "embedded": summary.embedded, "claims": summary.claims,
                  "workers_lost": summary.workers_lost,
                  # The sync's own RSS samples: ru_maxrss of a child also counts its parent's pages
                  # at fork, which says more about the parent than about this run.
                  "driver_peak_rss_mb": summary.peak_rss_mb,
                  "worker_peaks_mb": worker_peaks})


class _KeepOpen:
    """The runner, with a close() that leaves it open."""

    def __init__(self, runner: Any) -> None:
        self.runner, self.info = runner, runner.info
        self.capacity = int(runner.capacity)

    def submit(self, texts: list[str], on_batch: Any = None) -> Any:
        return self.runner.submit(texts, on_batch)

    def watch_for_hangs(self, rule: Any) -> None:
        self.runner.watch_for_hangs(rule)

    def stats(self) -> dict[str, object]:
        return dict(self.runner.stats())

    def close(self) -> None:
        pass


# -- parent --------------------------------------------------------------------------------------------

def measure(mode: str, corpus: Path, index_dir: Path, model: str, workers: int,
            chunk_rows: int) -> Result:
    return run_child(__name__, mode, ["--corpus", str(corpus), "--index", str(index_dir), "--model", model,
                                      "--workers", str(workers), "--chunk-rows", str(chunk_rows)])


def max_abs_diff(a: Path, b: Path) -> float:
    """The largest difference between the vectors two indexes serve, document by document."""
    import numpy as np

    import indexer

    with indexer.open(a) as index:
        ids = list(index.vectors()[0])
    return float(np.abs(vectors_by_id(a, ids) - vectors_by_id(b, ids)).max())


def ray_measurement(corpus: Path, model: str, workers: int, chunk_rows: int,
                    inline_index: Path | None, scratch: Path) -> Result:
    """One Ray run (a local Ray, `workers` actors) of `corpus`; with `inline_index`, also the largest
    difference of its vectors from those. For the backends case to call as well."""
    out = measure("ray", corpus, scratch / f"ray-{model.replace(':', '-')}-{workers}", model, workers,
                  chunk_rows)
    if inline_index is not None:
        out["max_abs_diff"] = max_abs_diff(scratch / f"ray-{model.replace(':', '-')}-{workers}",
                                           inline_index)
    return out


def row(r: dict[str, Any]) -> list[object]:
    embed_s = float(r["embed_s"])
    rate = r["embedded"] / embed_s if embed_s else 0.0
    return [r["mode"], r["model"], r["workers"], float(r["startup_s"]), embed_s, rate,
            float(r["shutdown_s"]), float(r["wall_s"]),
            r["claims"], r["workers_lost"], f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else "-",
            float(r["driver_peak_rss_mb"]), " / ".join(f"{w:.0f}" for w in r["worker_peaks_mb"]) or "-"]


HEADERS = ["backend", "model", "workers", "start-up s", "embed s", "docs/s (embed)", "shut-down s",
           "process wall s",
           "claims", "workers lost", "max abs diff vs inline", "driver peak RSS MB",
           "actor peak RSS MB (each)"]


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["inline", "ray"])
    ap.add_argument("--n", type=int, default=2000, help="documents (a build_corpus corpus)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-rows", type=int, default=256, help="rows per claim (default 256)")
    ap.add_argument("--no-fake", action="store_true", help="skip the fake-model overhead runs")
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    ap.add_argument("--index", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child, args.corpus, args.index, args.model, args.workers, args.chunk_rows)
        return

    report = Report()
    corpus = ensure_corpus(args.n)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        scratch = Path(tmp)
        models = [args.model] + ([] if args.no_fake else ["fake:384"])
        for model in models:
            inline_dir = scratch / f"inline-{model.replace(':', '-')}"
            inline = measure("inline", corpus, inline_dir, model, 1, args.chunk_rows)
            inline["max_abs_diff"] = 0.0
            results.append(inline)
            print(json.dumps(inline), flush=True)
            ray_run = ray_measurement(corpus, model, args.workers, args.chunk_rows, inline_dir, scratch)
            results.append(ray_run)
            print(json.dumps(ray_run), flush=True)
    body = [
        f"Corpus: {args.n} documents of `{corpus.name}` (build_corpus), claims of "
        f"{args.chunk_rows} rows, a fresh index per run, each run in its own process. `start-up s`: "
        "making the runner (for Ray: starting a local Ray instance and the actors, each loading the "
        "model); `embed s`: claim, embed, write and commit of every document (the sync's "
        "embed_seconds, with the runner closed after it); `shut-down s`: closing the runner (for Ray: "
        "killing the actors and stopping the local instance); `process wall s`: the whole child "
        "process, Python start included. fake:384 does no model work: it shows the cost of the "
        "machinery alone. Threads: inline runs torch with its default count (all cores); each Ray "
        "actor is pinned to its share (cores / workers). Actor RSS is sampled every 0.1 s during the "
        "sync.",
        table(HEADERS, [row(r) for r in results]),
    ]
    provisional = "The machine was shared with other work while this ran; re-run on an idle machine."
    if report.note:
        provisional += " " + report.note
    report.publish("ray", f"Ray backend: {args.workers} workers vs in-process", body,
                   write=not args.no_results, provisional=provisional)

