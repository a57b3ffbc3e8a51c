"""What chunking costs the scan of new documents: a first scan of N real-text documents, side by side.

    python -m bench chunking                     # 100k documents, 3 runs of each mode
    python -m bench chunking --n 20000 --repeat 1 --no-results

Each run, in a fresh process, scans the first N documents of bench/data/corpus_100000.jsonl
(`python -m bench build_corpus`) into a fresh manifest with Manifest.scan_batch, in batches of the default
scan_batch, and times the scan alone (no model, no embedding):

  none     no chunker: what an unchunked index (or the fake model without --chunk-tokens) does
  window   the default model's chunker at its window (254 tokens): texts that provably fit by their
           length (the cheap path) are not tokenized; the others are, and the longer ones are split

The tokenizer is loaded before the timer starts (once a sync, about 0.1 s; reported apart). Reported:
documents/s, the cheap-path share, the share tokenized, documents split and their chunks. Only new and
changed documents are ever chunked: a no-change resync (bench_resync.py) never reaches the chunker.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from .._common import DATA, Report, Result, case_parser, child_result, run_child, table

SOURCE = "corpus_100000.jsonl"
MODES = ("none", "window")


def child(corpus: Path, mode: str, n: int) -> None:
    import itertools

    from indexer._reading import in_batches
    from indexer.chunking import make_chunker
    from indexer.manifest import Manifest, ScanCounts
    from indexer.settings import DEFAULT_MODEL, Settings
    from indexer.sources import open_sources

    settings = Settings()
    chunker = make_chunker(DEFAULT_MODEL, 256, "", 0, 0) if mode == "window" else None
    t = time.perf_counter()
    if chunker is not None:
        chunker.budget  # noqa: B018 (loads the tokenizer)
    load_s = time.perf_counter() - t
    sources = open_sources([str(corpus)], "id", "text")
    records = list(itertools.islice(itertools.chain.from_iterable(sources), n))
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Manifest(Path(tmp) / "manifest.sqlite", settings, create=True)
        counts = ScanCounts()
        manifest.begin_scan()
        t = time.perf_counter()
        for batch in in_batches(records, settings.scan_batch):
            manifest.scan_batch(batch, counts, chunker=chunker, split=True)
        scan_s = time.perf_counter() - t
        manifest.close()
    texts = [r.text for r in records]  # type: ignore[union-attr]
    cheap = sum(chunker.fits_cheaply(x) for x in texts) if chunker is not None else len(texts)
    child_result({"scan_s": scan_s, "load_s": load_s, "docs": counts.scanned, "chunks": counts.chunks,
                  "split": sum(1 for x in texts if chunker is not None and len(chunker.split(x)) > 1),
                  "cheap": cheap})


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["scan"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    corpus = args.data.resolve() / SOURCE
    if args.child == "scan":
        child(corpus, args.mode, args.n)
        return
    if not corpus.is_file():
        sys.exit(f"{corpus} is missing: run python -m bench build_corpus --n 100000 first")
    report = Report()
    runs: dict[str, list[Result]] = {m: [] for m in MODES}
    for _ in range(args.repeat):
        for mode in MODES:  # alternating, so that a change in the machine's load hits both
            runs[mode].append(run_child(__name__, "scan", ["--mode", mode, "--n", str(args.n),
                                                           "--data", str(args.data.resolve())]))
    rows = []
    for mode in MODES:
        r = runs[mode]
        best = min(x["scan_s"] for x in r)
        median = statistics.median(x["scan_s"] for x in r)
        rows.append([mode, f"{args.n / best:,.0f}", f"{args.n / median:,.0f}",
                     f"{best / min(x['scan_s'] for x in runs['none']):.2f}x",
                     f"{r[0]['cheap'] / args.n:.1%}", f"{1 - r[0]['cheap'] / args.n:.1%}",
                     f"{r[0]['split']:,}", f"{r[0]['chunks']:,}",
                     f"{statistics.median(x['load_s'] for x in r):.2f}"])
    header = ["mode", "docs/s (best)", "docs/s (median)", "scan time vs none (best)", "cheap path",
              "tokenized", "documents split", "chunks", "tokenizer load s"]
    report.publish("chunking", "Chunking: what the chunker costs the scan of new documents",
                   [f"First scan of the first {args.n:,} documents of bench/data/{SOURCE} into a fresh "
                    "manifest, scan only (no model); each figure one fresh process, modes alternating.",
                    table(header, rows)], write=not args.no_results)

