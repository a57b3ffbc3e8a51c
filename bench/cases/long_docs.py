"""Long-document retrieval: find a page from a sentence deep inside it, chunked index vs truncating index.

    python -m bench long_docs                      # 300 pages, 300 queries, both arms
    python -m bench long_docs --docs 60 --no-results

Documents are whole documentation pages on this machine (nothing downloaded): the .rst / .txt / .md
files under /usr/share/doc and CMake's Help/, and the long descriptions of the installed packages
(dist-info METADATA), as the build_corpus case finds them; pages of 3,000 to 20,000 characters,
distinct, a seeded sample of --docs. Each query is one sentence from deep inside its page: it starts
past the page's first 256 tokens (the default model's window, counted with its own tokenizer), has 8
to 40 words, is mostly words, and occurs in no other page; its answer is its page. One query per page
where such a sentence exists. Corpus and queries are written to bench/data/long_docs/ (deterministic).

Arms, each a fresh index built by `indexer.sync(DIR, paths=[DOCS], options=SyncOptions(chunking=...))` in
a fresh process with the real default model (inline, float32), what `indexer sync DOCS --index DIR
[--no-chunking]` runs:
  chunked     chunking=True (the default: long pages chunked at the model's window)
  truncating  chunking=False (`--no-chunking`: one vector of each page's start)
Before chunking existed, a sync always truncated: then only the truncating arm runs (said in the
output). Then `indexer search DIR --queries FILE --json -k 10`, and from its ranks: Recall@1, Recall@10
and MRR@10 (reciprocal rank of the page in the top 10, else 0). Sync throughput: pages/s and page
tokens/s from the sync's own `seconds` (model load included), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .._common import DATA, ROOT, Report, Result, case_parser, child_result, run_child, table
from .._corpus import doc_files, read_doc, tokenizer

WINDOW = 256  # the default model's max_seq_length, in tokens ([CLS] included)
MIN_CHARS, MAX_CHARS = 3_000, 20_000
OUT = DATA / "long_docs"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_WORD = re.compile(r"[A-Za-z]{2,}")


def _norm(text: str) -> str:
    return " ".join(text.split())


def _page_id(path: Path) -> str:
    if path.name == "METADATA":
        return f"pypi/{path.parent.name.removesuffix('.dist-info')}"
    return str(path)


def _good_sentence(s: str) -> bool:
    words = s.split()
    if not 8 <= len(words) <= 40:
        return False
    letters = sum(len(w) for w in _WORD.findall(s))
    return letters >= 0.7 * len(s.replace(" ", "")) and not any(c in s for c in "|=*`#<>{}")


def build(n_docs: int, seed: int) -> tuple[Path, Path, dict[str, int]]:
    """Write docs.jsonl and queries.jsonl ({"query", "answer"}); return their paths and a summary."""
    tok = tokenizer()
    pages: dict[str, str] = {}
    seen: set[str] = set()
    for path in doc_files():
        text = read_doc(path).strip()
        key = _norm(text)
        if MIN_CHARS <= len(text) <= MAX_CHARS and key not in seen:
            seen.add(key)
            pages[_page_id(path)] = text
    ids = sorted(pages)
    random.Random(seed).shuffle(ids)
    normalized = {i: _norm(pages[i]) for i in ids}
    rng = random.Random(seed + 1)
    docs: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    tokens: list[int] = []
    for doc_id in ids:
        if len(docs) == n_docs:
            break
        text = pages[doc_id]
        enc = tok.encode(text)
        if len(enc.ids) <= WINDOW + 64:  # not long enough to have a sentence past the window
            continue
        deep = enc.offsets[WINDOW][0]  # the first character past the model's window
        candidates = [s for s in (_norm(p) for p in _SENTENCE_END.split(text[deep:])[1:])
                      if _good_sentence(s)]
        rng.shuffle(candidates)
        for s in candidates:
            if not any(s in normalized[other] for other in ids if other != doc_id):
                docs.append({"id": doc_id, "text": text})
                queries.append({"query": s, "answer": doc_id})
                tokens.append(len(enc.ids))
                break
    OUT.mkdir(parents=True, exist_ok=True)
    docs_path, queries_path = OUT / "docs.jsonl", OUT / "queries.jsonl"
    docs_path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    queries_path.write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    tokens.sort()
    info = {"pages": len(docs), "queries": len(queries), "tokens_total": sum(tokens),
            "tokens_median": tokens[len(tokens) // 2] if tokens else 0,
            "tokens_max": tokens[-1] if tokens else 0, "over_window": sum(t > WINDOW for t in tokens)}
    return docs_path, queries_path, info


def _indexer(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "indexer", *args]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise RuntimeError(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return proc


def has_chunking() -> bool:
    import inspect

    import indexer

    return hasattr(indexer, "SyncOptions") or "chunking" in inspect.signature(indexer.sync).parameters


def child_sync(index: Path, docs: Path, chunking: str) -> None:
    import indexer

    if chunking == "default":  # a library from before chunking
        summary = indexer.sync(index, paths=[str(docs)])
    elif hasattr(indexer, "SyncOptions"):
        summary = indexer.sync(index, paths=[str(docs)],
                               options=indexer.SyncOptions(chunking=chunking == "on"))
    else:  # a library from before SyncOptions, with chunking
        summary = indexer.sync(index, paths=[str(docs)], chunking=chunking == "on")  # type: ignore[call-arg]
    child_result(summary.to_dict())


def run_arm(arm: str, docs: Path, queries: Path, chunking: str) -> Result:
    index = OUT / f"index_{arm}"
    shutil.rmtree(index, ignore_errors=True)
    summary = run_child(__name__, "sync", ["--index", str(index), "--docs-file", str(docs), "--chunking",
                                           chunking])
    sync_wall = float(summary["wall_s"])
    qs = [json.loads(line) for line in queries.read_text(encoding="utf-8").splitlines()]
    qfile = OUT / "queries.txt"
    qfile.write_text("".join(q["query"] + "\n" for q in qs), encoding="utf-8")
    t = time.perf_counter()
    lines = _indexer("search", str(index), "--queries", str(qfile), "--json", "-k", "10").stdout.splitlines()
    search_wall = time.perf_counter() - t
    results = [json.loads(line) for line in lines]
    assert [r["query"] for r in results] == [q["query"] for q in qs]
    ranks = []
    for q, r in zip(qs, results, strict=True):
        found = [h["id"] for h in r["hits"]]
        ranks.append(found.index(q["answer"]) + 1 if q["answer"] in found else None)
    n = len(ranks)
    return {
        "arm": arm, "queries": n,
        "recall@1": sum(r == 1 for r in ranks) / n,
        "recall@10": sum(r is not None for r in ranks) / n,
        "mrr@10": sum(1 / r for r in ranks if r is not None) / n,
        "sync_s": float(summary["seconds"]), "sync_wall_s": sync_wall, "search_wall_s": search_wall,
        "embedded": summary["embedded"],
        "sync_peak_rss_mb": summary["peak_rss_mb"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, children=["sync"])
    ap.add_argument("--docs", type=int, default=300, help="pages (default 300)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--index", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--docs-file", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--chunking", choices=["on", "off", "default"], help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child == "sync":
        child_sync(a.index, a.docs_file, a.chunking)
        return
    report = Report()
    docs, queries, corpus = build(a.docs, a.seed)
    print(f"corpus: {json.dumps(corpus)}", file=sys.stderr)
    chunking = has_chunking()
    arms = [("chunked", "on"), ("truncating", "off")] if chunking else [("truncating", "default")]
    rows: list[Result] = []
    for arm, flags in arms:
        r = run_arm(arm, docs, queries, flags)
        print(f"{arm}: {json.dumps(r)}", file=sys.stderr)
        rows.append(r)
    tokens = corpus["tokens_total"]
    body = [
        f"{corpus['pages']} documentation pages from this machine ({corpus['over_window']} longer than "
        f"the {WINDOW}-token window; page tokens: median {corpus['tokens_median']:,}, max "
        f"{corpus['tokens_max']:,}, total {tokens:,}), {corpus['queries']} queries, each a sentence from "
        f"past the first {WINDOW} tokens of its page. Real default model (all-MiniLM-L6-v2), inline, "
        "float32; k=10.",
        "" if chunking else "\nChunking is not in this build: every sync truncates; only that arm ran.\n",
        table(["index", "Recall@1", "Recall@10", "MRR@10", "vectors embedded", "sync (s)", "pages/s",
               "page tokens/s", "sync peak RSS (MB)", "search all queries (s, CLI)"],
              [[r["arm"], r["recall@1"], r["recall@10"], r["mrr@10"], r["embedded"], r["sync_s"],
                corpus["pages"] / r["sync_s"], tokens / r["sync_s"], r["sync_peak_rss_mb"],
                r["search_wall_s"]] for r in rows]),
        "",
        "Sync seconds are the sync's own (`SyncSummary.seconds`, model load included); search is the whole "
        "`indexer search --queries` process (interpreter start, model load, all queries).",
    ]
    title = "Long-document retrieval, chunked vs truncating (bench/cases/long_docs.py)"
    report.publish("long-docs", title, body, write=not a.no_results,
                   provisional=report.note or "Shared machine: timings are noisy.")

