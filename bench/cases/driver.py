"""The driver: a full sync from empty with the fake model, where embedding costs next to nothing.

    python -m bench driver                          # 100k and 1M docs, this tree vs the merge base
    python -m bench driver --sizes 100000 --baseline "" --no-results

Each run is `indexer.sync(fresh index, paths=[corpus], options=SyncOptions(model="fake:384"))` (what
`indexer sync --model fake:384` runs: inline backend, default settings) in a fresh process, timed from
before `import indexer`
to the sync's return ("whole sync": process start to exit, less the interpreter's own start-up). Where
the time goes, from the sync's own summary (`SyncSummary.scan_seconds` and `step_seconds`, the wall
seconds of the embed phase by driver step):

  scan        the scan phase (scan_seconds)
  claim       the claims (Manifest.claim_many), the texts to embed read included
  embed       handing groups to the runner and waiting for their vectors: with the inline backend the
              fake model runs there, so this is the model's time plus the hand-over
  write       waiting for the chunk files, written and fsynced (beside the commit of the group before)
  commit      the commits (Manifest.commit_many)
  other       the rest of the embed phase (the runner's start, splitting, checks, progress)

A library older than `step_seconds` (a --baseline before it) has no such figures: for it, and only for
it, the child falls back to wrapping the driver's functions with timers (`fallback_step_timer`), named
in the table as "(wrapped)". "embed phase" is SyncSummary.embed_seconds: claim -> embed -> write ->
commit, nothing to scan. CPU seconds (user + system, getrusage) are given beside wall seconds: on a
shared machine they move less.

Corpus: the first N lines of corpus_100000.jsonl for N <= 100,000, else corpus_N.jsonl (build it with
`python -m bench build_corpus --n 1000000 --no-tokens`), in --data. With --baseline REF (default: the
merge base with main) the same runs are made with the library of REF (`git archive` into a temp dir; its
children import that `indexer` and this tree's `bench`), alternating with this tree's, for a
side-by-side ratio on the same, possibly loaded, machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import resource
import shutil
import tempfile
import time
from pathlib import Path

from .._common import (
    DATA,
    CallTimer,
    Report,
    Result,
    add_baseline_option,
    case_parser,
    child_result,
    libraries,
    library_root,
    run_child,
    table,
)
from .._corpus import corpus_of

STEPS = ("claim", "embed", "write", "commit")


# -- child -------------------------------------------------------------------------------------------

def fallback_step_timer() -> CallTimer:
    """FALLBACK FOR OLD LIBRARIES ONLY, those without `SyncSummary.step_seconds`: the driver's steps
    timed by wrapping the functions (private ones included) that did them in those versions, under the
    keys of step_seconds. "embed" is the inline runner's `submit` (where the model runs inline; the
    wait for its done future, which step_seconds also counts, is next to nothing)."""
    from indexer.manifest import Manifest
    from indexer.runners.inline import InlineRunner
    from indexer.store import VectorStore

    timer = CallTimer()
    timer.wrap(Manifest, "claim_many" if hasattr(Manifest, "claim_many") else "claim", "claim")
    timer.wrap(Manifest, "commit_many" if hasattr(Manifest, "commit_many") else "commit", "commit")
    timer.wrap(InlineRunner, "submit", "embed")
    sync_module = importlib.import_module("indexer.sync")  # (indexer.sync is the function)
    if importlib.util.find_spec("indexer._driver") is not None:  # the driver in a module of its own
        timer.wrap(importlib.import_module("indexer._driver").Writing, "written", "write")
    elif hasattr(sync_module, "_Writing"):  # written while the next group is embedded: the wait left
        timer.wrap(sync_module._Writing, "written", "write")
    elif hasattr(sync_module, "_write_group"):  # a group's chunks are written side by side: its wall time
        timer.wrap(sync_module, "_write_group", "write")
    else:
        timer.wrap(VectorStore, "write_chunk", "write")
    return timer


def child_sync(corpus: Path, index: Path, dim: int) -> None:
    start = time.perf_counter()
    import indexer

    hooked = "step_seconds" in {f.name for f in dataclasses.fields(indexer.SyncSummary)}
    timer = None if hooked else fallback_step_timer()
    shutil.rmtree(index, ignore_errors=True)
    model = f"fake:{dim}"
    if hasattr(indexer, "SyncOptions"):
        s = indexer.sync(index, paths=[str(corpus)], options=indexer.SyncOptions(model=model))
    else:  # a baseline library from before SyncOptions takes its options as keywords
        s = indexer.sync(index, paths=[str(corpus)], model=model)  # type: ignore[call-arg]
    total = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with indexer.open(index) as idx:
        st = idx.status()
    shutil.rmtree(index, ignore_errors=True)
    steps = dict(s.step_seconds) if timer is None else timer.spent
    child_result({"total_s": total, "cpu_s": usage.ru_utime + usage.ru_stime, "scan_s": s.scan_seconds,
                  "embed_s": s.embed_seconds, "embedded": s.embedded, "done": st["done"],
                  "pending": st["pending"], "claims": s.claims, "steps": steps, "wrapped": timer is not None,
                  "library": str(library_root())})


# -- parent ------------------------------------------------------------------------------------------

SHARES = ["scan", *STEPS, "other"]


def shares(g: Result) -> dict[str, float]:
    """Seconds of each step of a run (see the module docstring)."""
    steps = g["steps"]
    out = {"scan": float(g["scan_s"]), **{k: float(steps.get(k, float("nan"))) for k in STEPS}}
    out["other"] = g["embed_s"] - sum(steps.get(k, 0.0) for k in STEPS)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["sync"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=1, help="runs per size and library (default 1)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the corpora")
    add_baseline_option(ap)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "sync":
        child_sync(args.corpus, args.index, args.dim)
        return

    report = Report()
    tmp = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    try:
        libs = libraries(args.baseline, tmp)
        rows: list[list[object]] = []
        share_rows: list[list[object]] = []
        ratio_rows: list[list[object]] = []
        wrapped: list[str] = []
        for n in args.sizes:
            corpus = corpus_of(n, args.data.resolve(), tmp)
            best: dict[str, Result] = {}
            for r in range(args.repeat):
                for label, lib in (libs if r % 2 == 0 else libs[::-1]):
                    got = run_child(__name__, "sync", ["--corpus", str(corpus), "--index", str(tmp / "ix"),
                                                       "--dim", str(args.dim)], library=lib)
                    if Path(got["library"]) != lib.resolve():
                        raise RuntimeError(f"{label}: the child imported the library at {got['library']}")
                    if got["done"] != n or got["pending"] != 0:
                        raise RuntimeError(f"{label}: incomplete sync of {n}: {got}")
                    print(f"N={n:,} {label}: {got['total_s']:.2f}s ({n / got['total_s']:,.0f} docs/s), "
                          f"scan {got['scan_s']:.2f}s, embed phase {got['embed_s']:.2f}s "
                          f"({n / got['embed_s']:,.0f} docs/s), cpu {got['cpu_s']:.2f}s", flush=True)
                    if label not in best or got["total_s"] < best[label]["total_s"]:
                        best[label] = got
            for label, _ in libs:
                g = best[label]
                if g["wrapped"] and label not in wrapped:
                    wrapped.append(label)
                name = f"{label} (wrapped)" if g["wrapped"] else label
                rows.append([f"{n:,}", name, round(n / g["total_s"]), g["total_s"], g["cpu_s"],
                             round(n / g["embed_s"]), g["embed_s"], g["scan_s"], g["claims"],
                             round(g["peak_rss_mb"])])
                sh = shares(g)
                share_rows.append([f"{n:,}", name, *(f"{sh[k]:.2f} ({sh[k] / g['total_s']:.0%})"
                                                      for k in SHARES)])
            if len(libs) == 2:
                b, a = best[libs[0][0]], best[libs[1][0]]
                sb, sa = shares(b), shares(a)
                ratio_rows.append([f"{n:,}", f"{b['total_s'] / a['total_s']:.2f}x",
                                   f"{b['cpu_s'] / a['cpu_s']:.2f}x", f"{b['embed_s'] / a['embed_s']:.2f}x",
                                   *(f"{sb[k] / sa[k]:.2f}x" for k in STEPS)])
        headers = ["N", "library", "docs/s (whole sync)", "whole sync s", "cpu s", "docs/s (embed phase)",
                   "embed phase s", "scan s", "claims", "peak RSS MB"]
        body = [f"Full `indexer.sync(paths=[corpus], model=\"fake:{args.dim}\")` into a fresh index (inline, "
                f"default settings), best of {args.repeat} per library, each run in its own process, "
                "libraries alternating. Whole sync: from before `import indexer` to the sync's return. "
                "See bench/cases/driver.py.", "", table(headers, rows), "",
                "Where the time goes: seconds (share of the whole sync). scan: `scan_seconds`; claim, "
                "embed, write, commit: the embed phase's `step_seconds` (claim includes reading the texts; "
                "embed is handing groups to the runner and waiting for them, with the inline backend the "
                "fake model's time plus the hand-over); other: the rest of the embed phase.", "",
                table(["N", "library", *SHARES], share_rows)]
        if wrapped:
            body += ["", f"(wrapped): {', '.join(wrapped)} predates `SyncSummary.step_seconds`; its steps "
                     "were timed by wrapping the driver's functions (the fallback for old libraries), embed "
                     "as the inline runner's `submit`."]
        if ratio_rows:
            body += ["", "Speed-up of this tree over the baseline (same machine, same hour; ratio of "
                     "seconds, baseline / this tree):", "",
                     table(["N", "whole sync", "cpu", "embed phase", *STEPS], ratio_rows)]
        report.publish("driver", "Driver: full sync with the fake model, 100k and 1M (issue 11)",
                       body, write=not args.no_results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
