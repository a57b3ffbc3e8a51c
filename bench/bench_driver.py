"""The driver's per-claim bookkeeping: a full sync with the fake model, where embedding costs little.

    python bench/bench_driver.py                          # 20k and 100k docs, this tree against --baseline
    python bench/bench_driver.py --sizes 20000 --repeat 1 --baseline "" --no-results

Each run is `indexer.sync(fresh index, paths=[corpus], embedder=FakeEmbedder(384))` in a fresh process,
inline backend, default settings (claims of 1024 rows). Inside that process Manifest.claim,
Manifest.commit, VectorStore.write_chunk and FakeEmbedder.embed are wrapped with timers, so the table
gives each step's time per claim; "driver" is the embed phase less the fake model's own time: what
a backend whose model is free would still cost per claim.

The corpus of N documents is the first N lines of corpus_100000.jsonl (bench/build_corpus.py) in
--data. With --baseline REF (default: the merge base with main) the same runs are made with the
library of REF (`git archive` into a temp dir), alternating with this tree's, for a side-by-side ratio
on the same, possibly loaded, machine.
"""

from __future__ import annotations

import argparse
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
    import indexer
    from indexer.embedders.fake import FakeEmbedder
    from indexer.manifest import Manifest
    from indexer.store import VectorStore

    timer = CallTimer()
    timed = timer.wrap
    timed(Manifest, "claim", "claim")
    timed(Manifest, "commit", "commit")
    timed(VectorStore, "write_chunk", "write")
    timed(FakeEmbedder, "embed", "embed")
    shutil.rmtree(index, ignore_errors=True)
    t = time.perf_counter()
    s = indexer.sync(index, paths=[str(corpus)], embedder=FakeEmbedder(dim))
    total = time.perf_counter() - t
    with indexer.open(index) as idx:
        st = idx.status()
    shutil.rmtree(index, ignore_errors=True)
    child_result({"total_s": total, "scan_s": s.scan_seconds, "embed_s": s.embed_seconds,
                  "embedded": s.embedded, "done": st["done"], "pending": st["pending"],
                  "claims": s.claims, "spent": timer.spent, "calls": timer.calls})


# -- parent ------------------------------------------------------------------------------------------

def corpus_of(n: int, data: Path, tmp: Path) -> Path:
    src = data / SOURCE
    out = tmp / f"corpus_{n}.jsonl"
    with src.open("rb") as f, out.open("wb") as g:
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    ap.add_argument("--repeat", type=int, default=2, help="runs per size and library (default 2)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder holding {SOURCE}")
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
        rows, ratio_rows = [], []
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
                          f"scan {got['scan_s']:.2f}s, embed phase {got['embed_s']:.2f}s", flush=True)
                    if label not in best or got["total_s"] < best[label]["total_s"]:
                        best[label] = got
            for label, _ in libs:
                g = best[label]
                per = {k: v / g["claims"] * 1000 for k, v in g["spent"].items()}
                driver = (g["embed_s"] - g["spent"]["embed"]) / g["claims"] * 1000
                rows.append([f"{n:,}", label, round(n / g["total_s"]), g["total_s"], g["scan_s"],
                             g["embed_s"], round(n / (g["embed_s"] - g["spent"]["embed"])),
                             g["claims"], per["claim"], per["commit"], per["write"], per["embed"], driver])
            if len(libs) == 2:
                b, a = best[libs[0][0]], best[libs[1][0]]
                drv = [(g["embed_s"] - g["spent"]["embed"]) for g in (b, a)]
                ratio_rows.append([f"{n:,}", f"{b['total_s'] / a['total_s']:.2f}x",
                                   f"{drv[0] / drv[1]:.2f}x",
                                   f"{b['spent']['claim'] / a['spent']['claim']:.2f}x",
                                   f"{b['spent']['commit'] / a['spent']['commit']:.2f}x"])
        headers = ["N", "library", "docs/s (whole sync)", "total s", "scan s", "embed phase s",
                   "docs/s (embed phase, less the model)", "claims", "claim ms/claim", "commit ms/claim",
                   "write ms/claim", "fake model ms/claim", "driver ms/claim (embed phase less model)"]
        body = [f"Full `indexer.sync` into a fresh index with fake:{args.dim} (inline, claims of 1024 rows), "
                f"best of {args.repeat} per library, each run in its own process, libraries alternating. "
                "Per-claim columns are wall time inside Manifest.claim / Manifest.commit / "
                "VectorStore.write_chunk / FakeEmbedder.embed. See bench/bench_driver.py.", "",
                table(headers, rows)]
        if ratio_rows:
            body += ["", "Speed-up of this tree over the baseline (same machine, same hour):", "",
                     table(["N", "whole sync", "driver (embed phase less model)", "claim", "commit"],
                           ratio_rows)]
        body += ["", "Machine:", "", machine_markdown(info)]
        text = "\n".join(body)
        print(text)
        if not args.no_results:
            update_results("driver", "Driver bookkeeping: claim, commit, write per claim (fake model)", text,
                           provisional=note)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
