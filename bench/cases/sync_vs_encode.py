"""Full `indexer sync` from empty against a plain `SentenceTransformer.encode`, same texts, same model.

    python -m bench sync_vs_encode      # 2000 paragraphs, order E S E (a few minutes on 2 idle cores)
    python -m bench sync_vs_encode --n 2000 --order ESE --no-results

E = `SentenceTransformer(path).encode(all_texts, batch_size=32)` in a fresh process (the model load is
timed apart; docs/s counts the encode call alone).
S = `indexer.sync(empty_dir, paths=[corpus.jsonl], options=SyncOptions(model="all-MiniLM-L6-v2",
dtype="float32", backend="inline", batch_size=32))` in a fresh process: model load, weights hash, scan,
claims, every chunk write (fsynced) and every manifest commit included; docs/s counts the whole call.
Its breakdown: the scan and the driver's steps (claim, embed, write, commit) from the sync's summary
(`scan_seconds`, `step_seconds`); inside embed, the model's forward passes and tokenization, and apart
the model's load and weights hash, from wrapping the embedder's functions (the library has no hook for
those).

Every run is its own child process, so they start equal; the order alternates to spread drift in the
machine's load over both. Numerics: the vectors the index serves are compared row by row (by id) with
the encode output (min cosine, max abs difference). The padding analysis counts the token slots each
batching scheme computes, from the model's tokenizer alone (no timing).

Target: sync docs/s >= 1.5x encode docs/s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

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
)
from .._corpus import ensure_corpus, length_report, read_texts, token_lengths

CHILD_ENV = {"TOKENIZERS_PARALLELISM": "false"}  # what the library sets for itself; the same for both
TARGET = 1.5


# -- children ----------------------------------------------------------------------------------------

def child_sync(corpus: Path, index_dir: Path, batch_size: int) -> None:
    import torch

    import indexer
    from indexer.embedders import sentence_transformers as stm

    # The scan and the driver's steps come from the summary (scan_seconds, step_seconds); the library
    # has no hook for its model's load or what the embed step does inside, so those are wrapped.
    timer = model_start_timer()
    wrap = timer.wrap
    wrap(stm.SentenceTransformerEmbedder, "tokenize", "tokenize (once per claim)")
    wrap(stm.SentenceTransformerEmbedder, "embed_tokenized", "model forward passes")
    t = time.perf_counter()
    s = indexer.sync(index_dir, paths=[str(corpus)],
                     options=indexer.SyncOptions(model="all-MiniLM-L6-v2", dtype="float32", backend="inline",
                                                 batch_size=batch_size))
    total_s = time.perf_counter() - t
    child_result({"total_s": total_s, "summary": {k: v for k, v in s.to_dict().items() if k != "warnings"},
                  "spent": timer.spent, "calls": timer.calls, "torch_threads": torch.get_num_threads()})


# -- analysis ----------------------------------------------------------------------------------------

def padding_analysis(texts: list[str], batch_size: int, chunk_rows: int, max_len: int) -> list[list[object]]:
    """Token slots computed by each batching scheme (real tokens / computed slots = efficiency)."""
    import numpy as np
    chars = np.array([len(t) for t in texts])
    toks = np.minimum(np.array(token_lengths(texts)), max_len)

    def slots(order: np.ndarray) -> int:
        return int(sum(len(b) * toks[b].max() for b in
                       (order[i:i + batch_size] for i in range(0, len(order), batch_size))))

    real = int(toks.sum())
    st_order = np.argsort(-chars)  # sentence-transformers: one call, sorted by character length
    by_chars = np.argsort(chars, kind="stable")  # the manifest's claims: ORDER BY chars, chunk_rows each
    claims = []
    for i in range(0, len(by_chars), chunk_rows):
        claim = by_chars[i:i + chunk_rows]
        claims.append(claim[np.argsort(toks[claim], kind="stable")])
    claim_slots = sum(slots(c) for c in claims)
    ideal = slots(np.argsort(toks, kind="stable"))
    rows: list[list[object]] = []
    for name, n in [("encode: one call, sorted by characters", slots(st_order)),
                    (f"sync: claims of {chunk_rows} by characters, sorted by tokens", claim_slots),
                    ("ideal: all texts sorted by tokens", ideal)]:
        rows.append([name, n, f"{real / n:.1%}", f"{n / ideal:.3f}"])
    return rows


def numerics(index_dir: Path, ids: list[str], enc_path: Path) -> tuple[float, float, int]:
    import numpy as np

    a, b = np.load(enc_path).astype(np.float64), vectors_by_id(index_dir, ids)
    return float(row_cosines(a, b).min()), float(np.abs(a - b).max()), len(b)


# -- parent ------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["encode", "sync"])
    ap.add_argument("--n", type=int, default=2000, help="paragraphs (default 2000)")
    ap.add_argument("--order", default="ESE", help="E = encode, S = sync, run in this order (default ESE)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child == "encode":
        child_encode(args.corpus, args.out, args.batch_size)
        return
    if args.child == "sync":
        child_sync(args.corpus, args.out, args.batch_size)
        return
    if set(args.order) - {"E", "S"} or "E" not in args.order or "S" not in args.order:
        ap.error("--order takes E and S, at least one of each")

    report = Report()
    corpus = ensure_corpus(args.n)
    ids, texts = read_texts(corpus)
    work = DATA / "bench_sync"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    common = ["--corpus", str(corpus), "--batch-size", str(args.batch_size)]
    runs: list[tuple[str, Result]] = []
    for k, what in enumerate(args.order, 1):
        if what == "E":
            out = work / f"encode_{k}.npy"
            r = run_child(__name__, "encode", [*common, "--out", str(out)], env=CHILD_ENV)
            r["out"] = str(out)
            r["docs_per_s"] = r["n"] / r["encode_s"]
            print(f"[{k}] encode: {r['encode_s']:.1f}s, {r['docs_per_s']:.1f} docs/s "
                  f"(load {r['load_s']:.1f}s)", flush=True)
        else:
            out = work / f"index_{k}"
            r = run_child(__name__, "sync", [*common, "--out", str(out)], env=CHILD_ENV)
            r["out"] = str(out)
            r["docs_per_s"] = r["summary"]["embedded"] / r["total_s"]
            load = r["spent"].get("model load", 0.0) + r["spent"].get("weights hash", 0.0)
            r["docs_per_s_no_load"] = r["summary"]["embedded"] / (r["total_s"] - load)
            print(f"[{k}] sync:   {r['total_s']:.1f}s, {r['docs_per_s']:.1f} docs/s "
                  f"({r['docs_per_s_no_load']:.1f} docs/s without model load + weights hash)", flush=True)
        runs.append((what, r))

    encodes = [r for w, r in runs if w == "E"]
    syncs = [r for w, r in runs if w == "S"]
    enc_rate = statistics.median(r["docs_per_s"] for r in encodes)
    sync_rate = statistics.median(r["docs_per_s"] for r in syncs)
    sync_rate_nl = statistics.median(r["docs_per_s_no_load"] for r in syncs)
    ratio, ratio_nl = sync_rate / enc_rate, sync_rate_nl / enc_rate
    # each sync against the mean of the encodes next to it in the order (fair under drift)
    pair_ratios: list[float] = []
    for i, (w, r) in enumerate(runs):
        if w == "S":
            near = [runs[j][1]["docs_per_s"] for j in (i - 1, i + 1)
                    if 0 <= j < len(runs) and runs[j][0] == "E"]
            if near:
                pair_ratios.append(r["docs_per_s"] / statistics.mean(near))

    # numerics: every sync against the first encode; the encodes against each other
    first = Path(encodes[0]["out"])
    num_rows: list[list[object]] = []
    for k, (w, r) in enumerate(runs, 1):
        if w == "S":
            mc, md, n = numerics(Path(r["out"]), ids, first)
            num_rows.append([f"[{k}] sync vs [1st] encode", n, f"{mc:.6f}", f"{md:.2e}"])
    if len(encodes) > 1:
        import numpy as np

        a, b = np.load(encodes[0]["out"]).astype(np.float64), np.load(encodes[1]["out"]).astype(np.float64)
        cos = row_cosines(a, b)
        num_rows.append(["encode vs encode", len(a), f"{cos.min():.6f}", f"{np.abs(a - b).max():.2e}"])

    run_rows: list[list[object]] = []
    for k, (w, r) in enumerate(runs, 1):
        if w == "E":
            run_rows.append([k, "encode", r["n"], round(r["encode_s"], 2), round(r["docs_per_s"], 1), "-",
                             f"load {r['load_s']:.1f}s (not counted)", r["torch_threads"],
                             round(r["peak_rss_mb"])])
        else:
            sp, s = r["spent"], r["summary"]
            steps = s["step_seconds"]
            model_s = sp.get("model forward passes", 0.0)
            tokenize_s = sp.get("tokenize (once per claim)", 0.0)
            other = r["total_s"] - s["scan_seconds"] - sum(steps.values()) - sum(
                sp.get(x, 0.0) for x in ("model load", "weights hash"))
            detail = (f"import+load {sp.get('model load', 0):.1f}s, "
                      f"weights hash {sp.get('weights hash', 0):.2f}s, scan {s['scan_seconds']:.2f}s, "
                      f"claim {steps.get('claim', 0):.2f}s, embed {steps.get('embed', 0):.1f}s (forward "
                      f"passes {model_s:.1f}s, tokenize {tokenize_s:.2f}s), "
                      f"write {steps.get('write', 0):.2f}s, commit {steps.get('commit', 0):.2f}s, "
                      f"other {other:.2f}s; {s['claims']} claims")
            run_rows.append([k, "sync", s["embedded"], round(r["total_s"], 2), round(r["docs_per_s"], 1),
                             round(r["docs_per_s_no_load"], 1), detail, r["torch_threads"],
                             round(r["peak_rss_mb"])])
    runs_md = table(["#", "what", "docs", "seconds", "docs/s", "docs/s w/o model load", "breakdown",
                     "torch threads", "peak RSS MB"], run_rows)
    summary_md = table(["measure", "value"], [
        ["encode docs/s (median)", round(enc_rate, 1)],
        ["sync docs/s (median, whole call incl. model load)", round(sync_rate, 1)],
        ["sync / encode", f"{ratio:.2f}x"],
        ["sync / encode, each sync vs its neighbouring encodes", ", ".join(f"{x:.2f}x" for x in pair_ratios)],
        ["sync / encode, model load + weights hash left out of sync", f"{ratio_nl:.2f}x"],
        [f"target >= {TARGET}x met (whole call)", "yes" if ratio >= TARGET else "NO"],
    ])
    num_md = table(["comparison", "rows", "min cosine", "max abs diff"], num_rows)
    pad_md = table(["batching", "token slots computed", "real tokens / slots", "vs ideal"],
                   padding_analysis(texts, args.batch_size, 1024, 256))
    lengths_md = length_report(texts)
    body = [
        f"Corpus: `{corpus.relative_to(DATA.parent.parent)}`, {len(texts):,} paragraphs "
        "(`python -m bench build_corpus`: docstrings and docs found on the machine).",
        lengths_md, "Runs (each a fresh process, in this order):", runs_md, summary_md,
        "Numerics:", num_md, "Padding (from token lengths alone, batch size "
        f"{args.batch_size}, at most 256 tokens):", pad_md]
    report.publish("sync-vs-encode", "Full sync vs plain encode (real model, CPU)", body,
                   write=not args.no_results)
    json.dump([[w, r] for w, r in runs], (work / "runs.json").open("w"), indent=1)

