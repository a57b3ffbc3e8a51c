"""A real-text corpus from what is already on this machine, as JSONL {"id", "text"}, and its lengths.

    python -m bench build_corpus --n 3000              # bench/data/corpus_3000.jsonl
    python -m bench build_corpus --n 1000000 --no-tokens
    python -m bench build_corpus --n 1000 --stdlib-sample --out sample.jsonl   # quick: stdlib only

Text comes from (no network, nothing downloaded):
  - docstrings of the Python standard library: every module, class and function docstring of the
    stdlib's .py files (read with `ast.get_docstring`, which cleans indentation exactly as
    `inspect.getdoc` does, without importing, so no module's import side effects run), plus
    `inspect.getdoc` over the built-in C modules (`sys.builtin_module_names`) and their members;
  - docstrings of the venv's site-packages .py files (torch, transformers, numpy, ...), the same way;
  - .rst / .txt / .md documentation on the machine (/usr/share/doc, CMake's Help/ .rst pages) and the
    long descriptions of installed packages (dist-info METADATA).
Each is split into paragraphs at blank lines; paragraphs that are too short or mostly not words are
dropped; duplicates (after whitespace normalisation) are removed. The pool is shuffled with a fixed
seed, so a corpus of N documents is the same on every run on the same machine. When N exceeds the pool,
paragraphs repeat with a suffix " (copy K)" that makes each text distinct.

The distinct-paragraph pool is cached in bench/data/paragraphs.v1.jsonl (--rebuild-pool to redo it).
The output reports the length distribution in characters and in tokens of the default model's tokenizer.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from .._common import case_parser
from .._corpus import POOL, corpus_path, ensure_corpus, length_report, load_pool, read_texts, stdlib_sample


def main(argv: list[str] | None = None) -> None:
    ap = case_parser(__name__, __doc__, results=False)
    ap.add_argument("--n", type=int, default=3000, help="number of documents (default 3000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="default: bench/data/corpus_N.jsonl")
    ap.add_argument("--rebuild-pool", action="store_true", help="walk the machine's text again")
    ap.add_argument("--force", action="store_true", help="rewrite the corpus file if it exists")
    ap.add_argument("--no-tokens", action="store_true", help="skip the token-length statistics")
    ap.add_argument("--stdlib-sample", action="store_true",
                    help="quick: the first N distinct paragraphs of the standard library's docstrings "
                         "(no pool, no statistics); needs --out")
    args = ap.parse_args(argv)
    if args.stdlib_sample:
        if args.out is None:
            ap.error("--stdlib-sample needs --out")
        texts = stdlib_sample(args.n)
        with args.out.open("w", encoding="utf-8") as f:
            for i, text in enumerate(texts):
                f.write(json.dumps({"id": f"stdlib-{i:05d}", "text": text}, ensure_ascii=False) + "\n")
        print(f"corpus: {args.out}: {len(texts):,} paragraphs of Python {sys.version.split()[0]} "
              "standard library docstrings")
        return
    pool = load_pool(args.rebuild_pool)
    kinds = Counter(r["source"] for r in pool)
    print(f"paragraph pool: {len(pool):,} distinct paragraphs ("
          + ", ".join(f"{k}: {v:,}" for k, v in kinds.items()) + f"); cached in {POOL}")
    path = args.out or corpus_path(args.n, args.seed)
    if args.force and path.exists():
        path.unlink()
    path = ensure_corpus(args.n, args.seed, args.out)
    print(f"corpus: {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.n:,} documents"
          + (f"; {args.n - len(pool):,} are suffixed copies" if args.n > len(pool) else "") + ")")
    _, texts = read_texts(path)
    print()
    print(length_report(texts, with_tokens=not args.no_tokens, seed=args.seed))
