"""No-change resync against the floor of merely parsing and hashing the file; lazy open of the vectors.

    python -m bench resync                       # resync at 100k and 1M; open/vectors at 10k and 1M
    python -m bench resync --sizes 100000 --open-sizes 10000 --repeat 1 --no-results
    python -m bench resync --sizes 1000000 --open-sizes 1000000 --repeat 6 --baseline REF --no-cli

For each size N (bench/data/corpus_N.jsonl, from the build_corpus case) an index is first built by a full
sync with the fake model (fake:DIM, default 384 like the default model) and cached in
bench/data/resync_index_fakeDIM_N/, keyed by the corpus file's fingerprint and the fake model's
revision; later runs reuse it (the build time is reported when it happens). A no-change resync only
adds a row to the manifest's runs table, so the cached index stays valid.
Then, alternating, each in a fresh process:

  floor    stdlib only: for each line json.loads, then hashlib.blake2b of the UTF-8 text
  source   the library's reading alone: JsonlSource records + content_hash (XXH3-128), no SQLite
  resync   indexer.sync(index, paths=[corpus]) with no change: the whole call, every manifest query
  cli      `indexer sync CORPUS --index DIR -q` (interpreter start and imports included; once per size)

Peak RSS is each process's own ru_maxrss; "over baseline" subtracts its RSS after imports. Targets:
resync <= 1.5x floor, and resync peak RSS flat in N.

Open: `indexer.open(dir)` + `idx.vectors()` (nothing should be read yet), then the first touch
`len(ids)` (reads the id/slot snapshot), then `np.asarray(vecs)` (reads every vector), with the RSS
after each step, at each of --open-sizes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from .._common import DATA, Report, Result, case_parser, child_result, libraries, rss_mb, run_child, table
from .._corpus import ensure_corpus

TARGET = 1.5
BUILD_MARK = "bench-build.json"


# -- corpus and cached index -------------------------------------------------------------------------

def fingerprint(path: Path) -> str:
    import xxhash

    h = xxhash.xxh3_64()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return f"{path.stat().st_size}:{h.hexdigest()}"


def index_dir(n: int, dim: int) -> Path:
    return DATA / f"resync_index_fake{dim}_{n}"


def ensure_index(n: int, dim: int, corpus: Path) -> Result | None:
    """Build the index of corpus_N unless a complete one for this corpus and fake model revision is
    cached. Returns the build result when it built one, else None."""
    import json

    from indexer.embedders.fake import FakeEmbedder

    path = index_dir(n, dim)
    mark = path / BUILD_MARK
    fp, revision = fingerprint(corpus), FakeEmbedder(dim).info.revision
    if mark.exists():
        try:
            built = json.loads(mark.read_text())
            if (built["corpus"], built.get("revision")) == (fp, revision):
                return None
        except (ValueError, KeyError):
            pass
    shutil.rmtree(path, ignore_errors=True)
    print(f"building the index of {n:,} documents with fake:{dim} (cached afterwards) ...", flush=True)
    r = run_child(__name__, "build", ["--corpus", str(corpus), "--index", str(path), "--dim", str(dim)])
    if r["embedded"] != n or r["pending"] != 0:
        raise RuntimeError(f"build of {path} is incomplete: {r}")
    mark.write_text(json.dumps({"corpus": fp, "revision": revision, "n": n, "dim": dim, "build": r}))
    print(f"  built in {r['total_s']:.1f}s ({n / r['total_s']:,.0f} docs/s: scan {r['scan_s']:.1f}s, "
          f"embed+write+commit {r['embed_s']:.1f}s), peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)
    return r


# -- children ----------------------------------------------------------------------------------------

def child_build(corpus: Path, index: Path, dim: int) -> None:
    import indexer
    from indexer.embedders.fake import FakeEmbedder

    t = time.perf_counter()
    s = indexer.sync(index, paths=[str(corpus)], embedder=FakeEmbedder(dim))
    total = time.perf_counter() - t
    with indexer.open(index) as idx:
        st = idx.status()
    child_result({"total_s": total, "scan_s": s.scan_seconds, "embed_s": s.embed_seconds,
                  "embedded": st["done"], "pending": st["pending"], "claims": s.claims})


def child_floor(corpus: Path) -> None:
    import hashlib
    import json

    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    n = 0
    with corpus.open("rb") as f:
        for line in f:
            hashlib.blake2b(json.loads(line)["text"].encode("utf-8")).digest()
            n += 1
    child_result({"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c, "n": n,
                  "base_rss_mb": base})


def child_source(corpus: Path) -> None:
    from indexer.manifest import content_hash
    from indexer.sources import Record
    from indexer.sources.jsonl import JsonlSource

    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    n = 0
    for r in JsonlSource(corpus, "id", "text"):
        if isinstance(r, Record):
            content_hash(r.text)
            n += 1
    child_result({"seconds": time.perf_counter() - t, "cpu_s": time.process_time() - c, "n": n,
                  "base_rss_mb": base})


def child_resync(corpus: Path, index: Path) -> None:
    import indexer

    base = rss_mb()
    t, c = time.perf_counter(), time.process_time()
    s = indexer.sync(index, paths=[str(corpus)])
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    if s.new or s.changed or s.embedded or s.skipped:
        raise RuntimeError(f"not a no-change resync: {s}")
    child_result({"seconds": seconds, "cpu_s": cpu, "n": s.unchanged, "base_rss_mb": base,
                  "scan_s": s.scan_seconds})


def child_cli(corpus: Path, index: Path) -> None:
    """Runs the console script as this process's only child: RUSAGE_CHILDREN is then its own."""
    import resource

    exe = Path(sys.executable).with_name("indexer")
    t = time.perf_counter()
    subprocess.run([str(exe), "sync", str(corpus), "--index", str(index), "-q"], check=True)
    seconds = time.perf_counter() - t
    child_result({"seconds": seconds, "peak_rss_mb":
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024})


def child_open(index: Path) -> None:
    import numpy as np

    import indexer

    out: dict[str, float] = {"base_rss_mb": rss_mb()}
    t = time.perf_counter()
    idx = indexer.open(index)
    ids, vecs = idx.vectors()
    out["open_vectors_s"] = time.perf_counter() - t
    out["rss_after_open_mb"] = rss_mb()
    t = time.perf_counter()
    n = len(ids)
    out["len_ids_s"] = time.perf_counter() - t
    out["rss_after_len_mb"] = rss_mb()
    t = time.perf_counter()
    arr = np.asarray(vecs)
    out["asarray_s"] = time.perf_counter() - t
    out["rss_after_asarray_mb"] = rss_mb()
    out["rows"], out["matrix_mb"] = n, arr.nbytes / 2**20
    if arr.shape[0] != n or not np.isfinite(arr[:: max(1, n // 1000)]).all():
        raise RuntimeError("vectors do not match the ids, or are not finite")
    idx.close()
    child_result(out)


# -- parent ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["build", "floor", "source", "resync", "cli", "open"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="resync sizes")
    ap.add_argument("--open-sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--repeat", type=int, default=2, help="floor/source/resync rounds per size (default 2)")
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI run")
    ap.add_argument("--baseline", default="",
                    help="also run the resync and open children with the library of this git ref (the same "
                         "cached index), alternating with this tree's, for a side-by-side ratio")
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        children: dict[str, Callable[[], None]] = {
            "build": lambda: child_build(args.corpus, args.index, args.dim),
            "floor": lambda: child_floor(args.corpus),
            "source": lambda: child_source(args.corpus),
            "resync": lambda: child_resync(args.corpus, args.index),
            "cli": lambda: child_cli(args.corpus, args.index),
            "open": lambda: child_open(args.index)}
        children[args.child]()
        return

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    with tempfile.TemporaryDirectory() as tmp:
        run(args, libraries(args.baseline, Path(tmp)))


def run(args: argparse.Namespace, libs: list[tuple[str, Path]]) -> None:
    report = Report()
    baseline = libs[0] if len(libs) > 1 else None
    side_by_side: dict[tuple[int, str], dict[str, list[float]]] = {}

    def against_baseline(n: int, what: str, kind: str, args_: list[str], key: str, r: int) -> Result:
        """One run of `kind` with each library, the order alternating by round `r`; this tree's result."""
        mine: Result = {}
        for label, library in (libs if r % 2 == 0 else libs[::-1]):
            got = run_child(__name__, kind, args_, library=library)
            side_by_side.setdefault((n, what), {}).setdefault(label, []).append(got[key])
            mine = got if label == "this tree" else mine
        return mine
    sizes = sorted(set(args.sizes) | set(args.open_sizes))
    corpora = {n: ensure_corpus(n) for n in sizes}
    builds = {n: ensure_index(n, args.dim, corpora[n]) for n in sizes}

    # resync vs floor
    res_rows: list[list[object]] = []
    sum_rows: list[list[object]] = []
    per_size: dict[int, dict[str, list[Result]]] = {}
    for n in sorted(args.sizes):
        corpus, index = corpora[n], index_dir(n, args.dim)
        got: dict[str, list[Result]] = {"floor": [], "source": [], "resync": [], "cli": []}
        for r in range(args.repeat):
            kinds = ["floor", "source", "resync"] if r % 2 == 0 else ["resync", "source", "floor"]
            for kind in kinds:
                extra = ["--index", str(index)] if kind == "resync" else []
                child_args = ["--corpus", str(corpus), *extra]
                got[kind].append(against_baseline(n, "no-change resync", kind, child_args, "seconds", r)
                                 if kind == "resync" and baseline is not None
                                 else run_child(__name__, kind, child_args))
                print(f"N={n:,} {kind}: {got[kind][-1]['seconds']:.2f}s, peak RSS "
                      f"{got[kind][-1]['peak_rss_mb']:.0f} MB", flush=True)
        if not args.no_cli:
            got["cli"].append(run_child(__name__, "cli", ["--corpus", str(corpus), "--index", str(index)]))
            print(f"N={n:,} cli: {got['cli'][-1]['seconds']:.2f}s", flush=True)
        per_size[n] = got
        labels = {"floor": "floor: stdlib json.loads + blake2b per line",
                  "source": "library read: JsonlSource + content_hash (no SQLite)",
                  "resync": "indexer.sync, no change (API call)",
                  "cli": "`indexer sync -q`, no change (whole process)"}
        for kind, runs in got.items():
            if not runs:
                continue
            secs = [x["seconds"] for x in runs]
            base = [x.get("base_rss_mb") for x in runs]
            cpus = ", ".join(f"{x['cpu_s']:.2f}" for x in runs) if "cpu_s" in runs[0] else "-"
            res_rows.append([f"{n:,}", labels[kind], ", ".join(f"{s:.2f}" for s in secs), cpus,
                             round(n / min(secs)), round(max(x["peak_rss_mb"] for x in runs)),
                             "-" if base[0] is None else
                             round(max(x["peak_rss_mb"] - x["base_rss_mb"] for x in runs))])
        best = {k: min(x["seconds"] for x in v) for k, v in got.items() if v}
        med = {k: statistics.median(x["seconds"] for x in v) for k, v in got.items() if v}
        cpu = {k: min(x["cpu_s"] for x in got[k]) for k in ("floor", "resync")}
        sum_rows.append([f"{n:,}", f"{best['resync'] / best['floor']:.2f}x",
                         f"{cpu['resync'] / cpu['floor']:.2f}x",
                         f"{med['resync'] / med['floor']:.2f}x",
                         "yes" if best["resync"] / best["floor"] <= TARGET else "NO",
                         f"{best['source'] / best['floor']:.2f}x",
                         f"{(best['resync'] - best['source']) / best['resync']:.0%}"])
    rss_line = ""
    if len(per_size) > 1:
        lo, hi = min(per_size), max(per_size)
        peak = {n: max(x["peak_rss_mb"] for x in per_size[n]["resync"]) for n in (lo, hi)}
        rss_line = (f"Resync peak RSS: {peak[lo]:.0f} MB at N={lo:,}, {peak[hi]:.0f} MB at N={hi:,} "
                    f"({peak[hi] / peak[lo]:.2f}x for {hi / lo:.0f}x the documents).")

    # open / vectors
    open_rows: list[list[object]] = []
    for n in sorted(args.open_sizes) if baseline is not None else []:
        for r in range(args.repeat):
            against_baseline(n, "open: first touch len(ids)", "open",
                             ["--index", str(index_dir(n, args.dim))], "len_ids_s", r)
    for n in sorted(args.open_sizes):
        o = run_child(__name__, "open", ["--index", str(index_dir(n, args.dim))])
        print(f"N={n:,} open: {o['open_vectors_s'] * 1000:.1f} ms, len(ids) {o['len_ids_s']:.2f}s, "
              f"asarray {o['asarray_s']:.2f}s", flush=True)
        open_rows.append([f"{o['rows']:,}", f"{o['open_vectors_s'] * 1000:.1f}",
                          f"{o['rss_after_open_mb'] - o['base_rss_mb']:+.1f}",
                          f"{o['len_ids_s'] * 1000:.1f}",
                          f"{o['rss_after_len_mb'] - o['rss_after_open_mb']:+.1f}",
                          f"{o['asarray_s'] * 1000:.1f}",
                          f"{o['rss_after_asarray_mb'] - o['rss_after_len_mb']:+.1f}",
                          round(o["matrix_mb"], 1)])

    build_rows: list[list[object]] = []
    for n, b in builds.items():
        if b is not None:
            build_rows.append([f"{n:,}", round(b["total_s"], 1), round(n / b["total_s"]),
                               round(b["scan_s"], 1),
                               round(b["embed_s"], 1), b["claims"], round(b["peak_rss_mb"])])
    parts = [
        f"Corpora: bench/data/corpus_N.jsonl (`python -m bench build_corpus`). Index: full sync with "
        f"fake:{args.dim}, cached in bench/data/resync_index_fake{args.dim}_N/. Each figure is one fresh "
        "process.",
        table(["N", "what", "seconds (each run)", "CPU seconds (each run)", "docs/s (best)", "peak RSS MB",
               "RSS over baseline MB"],
              res_rows),
        table(["N", "resync / floor (best)", "CPU time resync / floor (best)", "resync / floor (median)",
               f"target <= {TARGET}x met",
               "library read / floor", "share of resync not in reading + hashing"], sum_rows),
        rss_line,
        "Open (`indexer.open` + `idx.vectors()`), then first touch `len(ids)`, then `np.asarray(vecs)`; "
        "RSS deltas of each step:",
        table(["rows", "open+vectors ms", "RSS delta MB", "len(ids) ms", "RSS delta MB", "np.asarray ms",
               "RSS delta MB", "matrix MB"], open_rows),
    ]
    if baseline is not None:
        rows = []
        for (n, what), by_library in sorted(side_by_side.items()):
            theirs, ours = by_library[baseline[0]], by_library["this tree"]
            rows.append([f"{n:,}", what, ", ".join(f"{x:.2f}" for x in theirs),
                         ", ".join(f"{x:.2f}" for x in ours), f"{min(theirs) / min(ours):.2f}x",
                         f"{statistics.median(theirs) / statistics.median(ours):.2f}x"])
        parts += [f"Side by side with {baseline[0]} (its library on the same cached index, each run a fresh "
                  "process, the order alternating round by round; ratio > 1: this tree is faster):",
                  table(["N", "what", f"{baseline[0]} s (each run)", "this tree s (each run)",
                         "ratio (best)", "ratio (median)"], rows)]
    if build_rows:
        parts += ["Index builds done by this run (full sync from empty, fake model):",
                  table(["N", "seconds", "docs/s", "scan s", "embed+write+commit s", "claims", "peak RSS MB"],
                        build_rows)]
    report.publish("resync", "No-change resync vs parse+hash floor; lazy open",
                   parts, write=not args.no_results)

