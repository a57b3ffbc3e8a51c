"""The driver benchmark (issue 11): a full sync from empty with the fake model, where embedding costs
next to nothing, so that what is measured is the driver: scan, claim, write, commit.

    python bench/bench_driver.py                          # 100k and 1M docs, this tree vs the merge base
    python bench/bench_driver.py --sizes 100000 --baseline "" --no-results

Each run is `indexer.sync(fresh index, paths=[corpus], model="fake:384")` (what `indexer sync --model
fake:384` runs: inline backend, default settings) in a fresh process, timed from before `import indexer`
to the sync's return ("whole sync": process start to exit, less the interpreter's own start-up). Inside
that process the driver's steps are wrapped with timers, for their shares of the whole:

  scan        the scan phase (SyncSummary.scan_seconds)
  claim       Manifest.claim_many (Manifest.claim in a library without it), the texts read included
  texts read  Manifest._free_texts (_pending_texts before): the claim's SELECT of the texts to embed
  model       FakeEmbedder.embed
  write       the chunk files written and fsynced (file and directories): the driver's wait for them,
              _driver.Writing.written (sync._Writing before; a group's chunks are written beside the commit),
              sync._write_group (a group's chunks, side by side) or VectorStore.write_chunk before
  commit      Manifest.commit_many (Manifest.commit in a library without it)
  other       the rest of the embed phase (splitting, checks, progress, the runner)

"embed phase" is SyncSummary.embed_seconds: claim -> embed -> write -> commit, nothing to scan. CPU
seconds (user + system, getrusage) are given beside wall seconds: on a shared machine they move less.

Corpus: the first N lines of corpus_100000.jsonl for N <= 100,000, else corpus_N.jsonl (build it with
`python bench/build_corpus.py --n 1000000 --no-tokens`), in --data. With --baseline REF (default: the
merge base with main) the same runs are made with the library of REF (`git archive` into a temp dir),
alternating with this tree's, for a side-by-side ratio on the same, possibly loaded, machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    DATA,
    ROOT,
    CallTimer,
    child_result,
    contention_note,
    machine,
    machine_markdown,
    run_child,
    table,
    update_results,
)

SOURCE = "corpus_100000.jsonl"


# -- child -------------------------------------------------------------------------------------------

def child_sync(corpus: Path, index: Path, dim: int) -> None:
    import resource

    start = time.perf_counter()
    import indexer
    from indexer.embedders.fake import FakeEmbedder
    from indexer.manifest import Manifest
    from indexer.store import VectorStore

    timer = CallTimer()
    timed = timer.wrap
    timed(Manifest, "claim_many" if hasattr(Manifest, "claim_many") else "claim", "claim")
    for texts_read in ("_free_texts", "_pending_texts"):  # (its name before the staged texts)
        if hasattr(Manifest, texts_read):
            timed(Manifest, texts_read, "texts read")
    timed(Manifest, "commit_many" if hasattr(Manifest, "commit_many") else "commit", "commit")
    sync_module = importlib.import_module("indexer.sync")  # (indexer.sync is the function)
    if importlib.util.find_spec("indexer._driver") is not None:  # the driver in a module of its own
        timed(importlib.import_module("indexer._driver").Writing, "written", "write")
    elif hasattr(sync_module, "_Writing"):  # written while the next group is embedded: the wait left
        timed(sync_module._Writing, "written", "write")
    elif hasattr(sync_module, "_write_group"):  # a group's chunks are written side by side: its wall time
        timed(sync_module, "_write_group", "write")
    else:
        timed(VectorStore, "write_chunk", "write")
    timed(FakeEmbedder, "embed", "model")
    shutil.rmtree(index, ignore_errors=True)
    s = indexer.sync(index, paths=[str(corpus)], model=f"fake:{dim}")
    total = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with indexer.open(index) as idx:
        st = idx.status()
    shutil.rmtree(index, ignore_errors=True)
    child_result({"total_s": total, "cpu_s": usage.ru_utime + usage.ru_stime, "scan_s": s.scan_seconds,
                  "embed_s": s.embed_seconds, "embedded": s.embedded, "done": st["done"],
                  "pending": st["pending"], "claims": s.claims, "spent": timer.spent, "calls": timer.calls,
                  "peak_rss_mb": usage.ru_maxrss / 1024})


# -- parent ------------------------------------------------------------------------------------------

def corpus_of(n: int, data: Path, tmp: Path) -> Path:
    """corpus_N.jsonl where it exists, else the first N lines of the smallest larger corpus."""
    if (data / f"corpus_{n}.jsonl").exists():
        return data / f"corpus_{n}.jsonl"
    sizes = sorted(int(p.stem.split("_")[1]) for p in data.glob("corpus_*.jsonl")
                   if p.stem.split("_")[1].isdigit())
    larger = [m for m in sizes if m >= n]
    if not larger:
        raise SystemExit(f"no corpus of {n:,} documents in {data}: run python bench/build_corpus.py "
                         f"--n {n} --no-tokens")
    out = tmp / f"corpus_{n}.jsonl"
    with (data / f"corpus_{larger[0]}.jsonl").open("rb") as f, out.open("wb") as g:
        for i, line in enumerate(f):
            if i == n:
                break
            g.write(line)
    return out


def baseline_tree(ref: str, tmp: Path) -> tuple[Path, str]:
    sha = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    out = tmp / f"baseline-{sha}"
    out.mkdir()
    archive = subprocess.run(["git", "archive", sha, "indexer", "migrations"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out, sha


def libraries(baseline: str, tmp: Path) -> list[tuple[str, Path]]:
    """(label, library root) to run: the baseline ref's (`git archive`; "merge-base": the merge base
    with main; "": none) first, then this tree's."""
    libs: list[tuple[str, Path]] = [("this tree", ROOT)]
    if baseline:
        ref = baseline
        if ref == "merge-base":
            ref = subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                                 text=True, check=True).stdout.strip()
        path, sha = baseline_tree(ref, tmp)
        libs.insert(0, (f"baseline {sha}", path))
    return libs


SHARES = ["scan", "claim", "texts read", "model", "write", "commit", "other"]


def shares(g: dict) -> dict[str, float]:
    """Seconds of each step of a run (see the module docstring); "texts read" is inside "claim"."""
    spent = g["spent"]
    out = {"scan": g["scan_s"], **{k: spent.get(k, float("nan")) for k in
                                   ("claim", "texts read", "model", "write", "commit")}}
    out["other"] = g["embed_s"] - sum(spent.get(k, 0.0) for k in ("claim", "model", "write", "commit"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=1, help="runs per size and library (default 1)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--data", type=Path, default=DATA, help="folder holding the corpora")
    ap.add_argument("--baseline", default="merge-base", help="git ref to compare with; '' for none")
    ap.add_argument("--no-results", action="store_true", help="do not update bench/RESULTS.md")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child_sync(args.corpus, args.index, args.dim)

    info = machine()
    note = contention_note()
    script = str(Path(__file__).resolve())
    tmp = Path(tempfile.mkdtemp(prefix="bench-driver-"))
    try:
        libs = libraries(args.baseline, tmp)
        rows, share_rows, ratio_rows = [], [], []
        for n in args.sizes:
            corpus = corpus_of(n, args.data, tmp)
            best: dict[str, dict] = {}
            for r in range(args.repeat):
                for label, lib in (libs if r % 2 == 0 else libs[::-1]):
                    got = run_child([script, "--child", "--corpus", str(corpus), "--index",
                                     str(tmp / "ix"), "--dim", str(args.dim)], env={"PYTHONPATH": str(lib)})
                    if got["done"] != n or got["pending"] != 0:
                        raise RuntimeError(f"{label}: incomplete sync of {n}: {got}")
                    print(f"N={n:,} {label}: {got['total_s']:.2f}s ({n / got['total_s']:,.0f} docs/s), "
                          f"scan {got['scan_s']:.2f}s, embed phase {got['embed_s']:.2f}s "
                          f"({n / got['embed_s']:,.0f} docs/s), cpu {got['cpu_s']:.2f}s", flush=True)
                    if label not in best or got["total_s"] < best[label]["total_s"]:
                        best[label] = got
            for label, _ in libs:
                g = best[label]
                rows.append([f"{n:,}", label, round(n / g["total_s"]), g["total_s"], g["cpu_s"],
                             round(n / g["embed_s"]), g["embed_s"], g["scan_s"], g["claims"],
                             round(g["peak_rss_mb"])])
                sh = shares(g)
                share_rows.append([f"{n:,}", label] + [f"{sh[k]:.2f} ({sh[k] / g['total_s']:.0%})"
                                                       for k in SHARES])
            if len(libs) == 2:
                b, a = best[libs[0][0]], best[libs[1][0]]
                sb, sa = shares(b), shares(a)
                ratio_rows.append([f"{n:,}", f"{b['total_s'] / a['total_s']:.2f}x",
                                   f"{b['cpu_s'] / a['cpu_s']:.2f}x", f"{b['embed_s'] / a['embed_s']:.2f}x",
                                   f"{sb['claim'] / sa['claim']:.2f}x", f"{sb['commit'] / sa['commit']:.2f}x",
                                   f"{sb['write'] / sa['write']:.2f}x"])
        headers = ["N", "library", "docs/s (whole sync)", "whole sync s", "cpu s", "docs/s (embed phase)",
                   "embed phase s", "scan s", "claims", "peak RSS MB"]
        body = [f"Full `indexer.sync(paths=[corpus], model=\"fake:{args.dim}\")` into a fresh index (inline, "
                f"default settings), best of {args.repeat} per library, each run in its own process, "
                "libraries alternating. Whole sync: from before `import indexer` to the sync's return. "
                "See bench/bench_driver.py.", "", table(headers, rows), "",
                "Where the time goes: seconds (share of the whole sync). claim includes texts read; "
                "other: the rest of the embed phase.", "",
                table(["N", "library", *SHARES], share_rows)]
        if ratio_rows:
            body += ["", "Speed-up of this tree over the baseline (same machine, same hour; ratio of "
                     "seconds, baseline / this tree):", "",
                     table(["N", "whole sync", "cpu", "embed phase", "claim", "commit", "write"], ratio_rows)]
        body += ["", "Machine:", "", machine_markdown(info)]
        text = "\n".join(body)
        print(text)
        if not args.no_results:
            update_results("driver", "Driver: full sync with the fake model, 100k and 1M (issue 11)", text,
                           provisional=note)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
