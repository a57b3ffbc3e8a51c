"""Runtimes on the CPU: sentence-transformers `encode` against `indexer sync` with torch, onnx, onnx-int8.

    python -m bench runtimes              # 2000 paragraphs (about 6 minutes on 2 idle cores)
    python -m bench runtimes --n 1000 --no-results

Every run is a fresh child process, in this order:
    encode          SentenceTransformer(path).encode(texts, batch_size=32), fp32 torch; the model load is
                    timed apart and docs/s counts the encode call alone (as bench_sync.py does)
    sync torch      indexer.sync(fresh dir, paths=[corpus], options=SyncOptions(batch_size=32))
    sync onnx       the same with runtime="onnx", into an EMPTY export cache: the first sync exports
    sync onnx-int8  runtime="onnx-int8", the fp32 export cached already: it quantizes
    sync onnx       again, the cache warm (steady state)
    sync onnx-int8  again, the cache warm (steady state)
    encode          again, so that drift in the machine's load shows
docs/s of a sync counts the whole call (model load, weights hash, scan, claims, writes, commits); the
export / quantization time is reported apart and left out of "docs/s w/o load". Ratios are against
the median encode docs/s. Torch and ONNX Runtime run with the same thread count (torch's default here).

Quality, from the stored vectors by id, against the torch sync's (fp32 torch, the reference): mean and
minimum cosine, and the overlap of the top-10 neighbours (cosine, itself excluded) of the first 200
documents as queries among all documents.

Targets (issue 6): onnx-int8 sync >= 3x encode docs/s; onnx >= torch; int8 mean cosine >= 0.99 and
top-10 overlap >= 0.9.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from .._common import (
    DATA,
    Report,
    Result,
    case_parser,
    child_encode,
    child_result,
    model_start_timer,
    row_cosines,
    run_child,
    table,
    vectors_by_id,
    version,
)
from .._corpus import ensure_corpus, read_texts

CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false"}
PLAN = [("encode", None, ""), ("sync", "torch", ""), ("sync", "onnx", "cold"), ("sync", "onnx-int8", "cold"),
        ("sync", "onnx", "warm"), ("sync", "onnx-int8", "warm"), ("encode", None, "")]
QUERIES = 200


# -- children ----------------------------------------------------------------------------------------

def child_sync(corpus: Path, index_dir: Path, batch_size: int, runtime: str) -> None:
    import torch

    import indexer
    from indexer.embedders import onnx_runtime as ox

    timer = model_start_timer()  # and the ONNX export and session: no hook in the library either
    wrap = timer.wrap
    wrap(ox, "ensure_exported", "export")  # the cache lookup, and on a cold cache the export/quantize
    wrap(ox, "_session", "session")  # ONNX Runtime session creation (graph optimization)
    t = time.perf_counter()
    s = indexer.sync(index_dir, paths=[str(corpus)],
                     options=indexer.SyncOptions(model="all-MiniLM-L6-v2", dtype="float32", backend="inline",
                                                 batch_size=batch_size, runtime=runtime))
    total_s = time.perf_counter() - t
    child_result({"total_s": total_s, "embedded": s.embedded, "failed": s.failed,
                  "embed_s": s.embed_seconds, "spent": timer.spent, "torch_threads": torch.get_num_threads()})


# -- quality -----------------------------------------------------------------------------------------

def quality(got: Any, ref: Any) -> tuple[float, float, float]:
    """(mean cosine, min cosine, top-10 overlap of QUERIES queries) of `got` against `ref`."""
    import numpy as np

    cos = row_cosines(got, ref)

    q = min(QUERIES, len(got))

    def top10(v: Any) -> Any:
        sims = v[:q] @ v.T
        sims[np.arange(q), np.arange(q)] = -np.inf
        return np.argsort(-sims, axis=1, kind="stable")[:, :10]

    a, b = top10(got), top10(ref)
    overlap = float(np.mean([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)]))
    return float(cos.mean()), float(cos.min()), overlap


# -- parent ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["encode", "sync"])
    ap.add_argument("--n", type=int, default=2000, help="paragraphs (default 2000)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--runtime", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "encode":
        child_encode(args.corpus, args.out, args.batch_size)
        return
    if args.child == "sync":
        child_sync(args.corpus, args.out, args.batch_size, args.runtime)
        return

    import numpy as np
    report = Report()
    report.info["onnxruntime"] = version("onnxruntime")
    report.info["onnx"] = version("onnx")
    corpus = ensure_corpus(args.n)
    ids, texts = read_texts(corpus)
    work = DATA / "bench_runtimes"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    cache = work / "onnx-cache"  # empty: the first onnx sync exports
    common = ["--corpus", str(corpus), "--batch-size", str(args.batch_size)]
    env = {**CHILD_ENV, "INDEXER_CACHE_DIR": str(cache)}
    runs: list[Result] = []
    for k, (what, runtime, cache_state) in enumerate(PLAN, 1):
        if what == "encode":
            out = work / f"encode_{k}.npy"
            r = run_child(__name__, "encode", [*common, "--out", str(out)], env=env)
            r.update(what="encode", runtime="torch (st encode)", out=str(out),
                     docs_per_s=r["n"] / r["encode_s"])
            print(f"[{k}] encode: {r['encode_s']:.1f}s, {r['docs_per_s']:.1f} docs/s", flush=True)
        else:
            out = work / f"index_{k}"
            r = run_child(__name__, "sync", ["--runtime", str(runtime), *common, "--out", str(out)], env=env)
            sp = r["spent"]
            load = sp.get("model load", 0.0) + sp.get("weights hash", 0.0) + sp.get("export", 0.0) \
                + sp.get("session", 0.0)
            r.update(what="sync", runtime=runtime, cache=cache_state, out=str(out),
                     docs_per_s=r["embedded"] / r["total_s"],
                     docs_per_s_no_load=r["embedded"] / (r["total_s"] - load))
            print(f"[{k}] sync {runtime} {cache_state}: {r['total_s']:.1f}s, {r['docs_per_s']:.1f} docs/s, "
                  f"{r['docs_per_s_no_load']:.1f} w/o load; export {sp.get('export', 0):.1f}s", flush=True)
        runs.append(r)

    enc_rate = statistics.median(r["docs_per_s"] for r in runs if r["what"] == "encode")
    torch_sync = next(r for r in runs if r["what"] == "sync" and r["runtime"] == "torch")
    ref = vectors_by_id(Path(torch_sync["out"]), ids)
    enc_ref = np.load(runs[0]["out"]).astype(np.float64)
    rows: list[list[object]] = []
    for k, r in enumerate(runs, 1):
        if r["what"] == "encode":
            got = np.load(r["out"]).astype(np.float64)
            mean, low, overlap = quality(got, ref)
            rows.append([k, "encode (sentence-transformers)", "-", round(r["encode_s"], 2),
                         round(r["docs_per_s"], 1), "-", f"{r['docs_per_s'] / enc_rate:.2f}x", "-",
                         f"load {r['load_s']:.1f}s (not counted)", f"{mean:.5f}", f"{low:.5f}",
                         f"{overlap:.3f}", r["torch_threads"], round(r["peak_rss_mb"])])
            continue
        got = vectors_by_id(Path(r["out"]), ids)
        mean, low, overlap = quality(got, ref)
        sp = r["spent"]
        rows.append([k, f"sync {r['runtime']}", r["cache"] or "-", round(r["total_s"], 2),
                     round(r["docs_per_s"], 1), round(r["docs_per_s_no_load"], 1),
                     f"{r['docs_per_s'] / enc_rate:.2f}x", f"{r['docs_per_s_no_load'] / enc_rate:.2f}x",
                     f"load {sp.get('model load', 0):.1f}s, hash {sp.get('weights hash', 0):.2f}s, "
                     f"export {sp.get('export', 0):.2f}s, session {sp.get('session', 0):.2f}s",
                     f"{mean:.5f}", f"{low:.5f}", f"{overlap:.3f}", r["torch_threads"],
                     round(r["peak_rss_mb"])])
    runs_md = table(["#", "what", "export cache", "seconds", "docs/s", "docs/s w/o load", "vs encode",
                     "vs encode w/o load", "start-up (in seconds)", "mean cos vs torch",
                     "min cos vs torch", f"top-10 overlap ({QUERIES} queries)", "threads", "peak RSS MB"],
                    rows)

    def spent(runtime: str, cache_state: str, key: str) -> float:
        return float(next(r for r in runs if r.get("cache") == cache_state and r["runtime"] == runtime)
                     ["spent"].get(key, 0.0))

    def best(runtime: str, key: str) -> float:
        return float(max(r[key] for r in runs if r["what"] == "sync" and r["runtime"] == runtime))

    warm = {rt: next(r for r in runs if r["what"] == "sync" and r["runtime"] == rt and r["cache"] == "warm")
            for rt in ("onnx", "onnx-int8")}
    int8_q = quality(vectors_by_id(Path(warm["onnx-int8"]["out"]), ids), ref)
    int8_vs_enc = quality(vectors_by_id(Path(warm["onnx-int8"]["out"]), ids), enc_ref)
    int8_ratio = warm["onnx-int8"]["docs_per_s"] / enc_rate
    onnx_vs_torch = warm["onnx"]["docs_per_s"] / torch_sync["docs_per_s"]
    summary_md = table(["measure", "value"], [
        ["encode docs/s (median of the two)", round(enc_rate, 1)],
        ["sync torch docs/s (whole call)", round(torch_sync["docs_per_s"], 1)],
        ["sync onnx docs/s (warm cache, whole call)", round(warm["onnx"]["docs_per_s"], 1)],
        ["sync onnx-int8 docs/s (warm cache, whole call)", round(warm["onnx-int8"]["docs_per_s"], 1)],
        ["onnx-int8 sync / encode (target >= 3x)",
         f"{int8_ratio:.2f}x ({'met' if int8_ratio >= 3 else 'NOT met'})"],
        ["onnx sync / torch sync (target >= 1x)",
         f"{onnx_vs_torch:.2f}x ({'met' if onnx_vs_torch >= 1 else 'NOT met'})"],
        ["best docs/s w/o load: torch / onnx / onnx-int8",
         " / ".join(f"{best(rt, 'docs_per_s_no_load'):.1f}" for rt in ("torch", "onnx", "onnx-int8"))],
        ["export fp32 (first onnx sync, incl. the check against torch)",
         f"{spent('onnx', 'cold', 'export'):.1f}s"],
        ["quantize int8 (first onnx-int8 sync, fp32 cached)",
         f"{spent('onnx-int8', 'cold', 'export'):.1f}s"],
        ["int8 vs torch sync: mean / min cosine, top-10 overlap (targets 0.99, -, 0.9)",
         f"{int8_q[0]:.5f} / {int8_q[1]:.5f} / {int8_q[2]:.3f}"],
        ["int8 vs encode: mean / min cosine, top-10 overlap",
         f"{int8_vs_enc[0]:.5f} / {int8_vs_enc[1]:.5f} / {int8_vs_enc[2]:.3f}"],
    ])
    body = [
        f"Corpus: `{corpus.relative_to(DATA.parent.parent)}`, {len(texts):,} paragraphs "
        f"(`python -m bench build_corpus`), model all-MiniLM-L6-v2, batch size {args.batch_size}, backend "
        "inline, float32 store. Each run is "
        "a fresh process; see bench/cases/runtimes.py for what each row measures. Quality columns "
        "compare the stored vectors, by id, with the torch sync's.",
        "Runs (in this order):", runs_md, summary_md]
    report.publish("runtimes", "Runtimes: torch, ONNX Runtime fp32 and int8 vs plain encode (CPU)", body,
                   write=not args.no_results)

