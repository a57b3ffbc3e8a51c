"""Exact search over an index's chunk rows: every row scored, documents ranked by their best chunk.

The rows are read in blocks (a bounded number of rows at a time, never the whole matrix), upcast to
float32, multiplied by the queries, and each block keeps only its best `k` documents per query
(`argpartition`, then the first `k` distinct documents among the best rows). Merging the blocks' best
documents by their maximum gives the exact top `k`: a document among the final top `k` has, in the block
holding its best chunk, fewer than `k` other documents scoring above it, so that block kept it.

Rows that were never written are NaN in the store; their scores are not finite and they are never
returned. Scores are cosine similarities: the dot product for an index of normalized vectors, and the
dot product divided by both norms otherwise.
"""

from __future__ import annotations

import heapq
import sqlite3
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .config import EmbeddingConfig
from .errors import IndexerError, ModelLoadError
from .manifest import content_hash, served_hashes
from .sources import Record

__all__ = ["BLOCK_BYTES", "ChunkRows", "Hit", "QueryTruncatedWarning", "check_k", "load_query_embedder",
           "query_texts", "search_rows", "served_texts", "snippet", "warn_long_queries"]

# Working memory of one block: its rows (float32) plus its score matrix and the selection's temporaries.
BLOCK_BYTES = 128 * 2**20
# Queries scored together; more are searched in turns, so the score matrix stays bounded too.
QUERY_BATCH = 256


@dataclass(frozen=True, slots=True)
class Hit:
    """A document found by a query: its id, the score of its best chunk, and that chunk's ordinal and
    character span [start, end) in the document's text."""

    id: str
    score: float
    chunk: int
    start: int
    end: int

    def to_dict(self) -> dict[str, object]:
        return {"id": self.id, "score": self.score, "chunk": self.chunk, "start": self.start, "end": self.end}


class _Rows(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, key: slice) -> np.ndarray: ...


class ChunkRows(Protocol):
    """What search reads: one row per chunk, its document's id, ordinal, character span and vector."""

    @property
    def ids(self) -> Sequence[str]: ...
    @property
    def ordinals(self) -> np.ndarray: ...
    @property
    def starts(self) -> np.ndarray: ...
    @property
    def ends(self) -> np.ndarray: ...
    @property
    def vectors(self) -> _Rows: ...


def query_texts(queries: Sequence[str]) -> list[str]:
    """`queries` as a list, each checked to be a non-blank string."""
    if isinstance(queries, str):
        raise TypeError("queries must be a sequence of strings, not one string: search([query])")
    out = []
    for n, q in enumerate(queries, 1):
        if not isinstance(q, str) or not q.strip():
            raise IndexerError(f"query {n} is empty ({q!r}); give the text to search for")
        out.append(q)
    return out


class QueryTruncatedWarning(UserWarning):
    """A query longer than the model's window: only its first window of tokens was embedded."""


def warn_long_queries(config: EmbeddingConfig, texts: Sequence[str]) -> None:
    """Warn (QueryTruncatedWarning) for each query the model cuts at its window, counted with the
    model's own tokenizer as the chunker counts documents; nothing for models without a window."""
    from .chunking import make_chunker

    chunker = make_chunker(config.model, config.max_seq_length, config.query_prompt, 0, 0)
    if chunker is None:
        return
    for n, text in enumerate(texts, 1):
        if chunker.over_budget(text):
            warnings.warn(QueryTruncatedWarning(
                f"query {n} is longer than the {config.max_seq_length}-token window of model "
                f"{config.model!r}: only its beginning was embedded; shorten it to search by all of it"),
                stacklevel=3)


def load_query_embedder(config: EmbeddingConfig, index_dir: object) -> Any:
    """The index's own model, loaded as the sync loads it (runtime, truncation), with the index's query
    prompt in place of its document prompt: the one place where a query prompt is applied (as
    sentence-transformers' `encode(query, prompt=...)` does). Refused when the model loaded here is not
    the one the index was built with: other weights make vectors that cannot be compared with the
    index's."""
    from .embedders import load_embedder

    if config.revision.startswith("api:"):
        raise ModelLoadError(
            f"index {index_dir} was embedded through an API ({config.model}, {config.revision[4:]}); search "
            "embeds queries with a local model and cannot reach it. Embed the queries with the same API "
            "and model and pass them to Index.search_vectors(vectors)")
    embedder = load_embedder(config.model, runtime=config.runtime, truncate_dim=config.truncate_dim or None,
                             prompt=config.query_prompt)
    info = embedder.info
    loaded = {"revision": info.revision, "dim": info.dim, "normalize": info.normalize,
              "max_seq_length": info.max_seq_length}
    diffs = [f"{name}: index has {getattr(config, name)!r}, the model loaded here has {value!r}"
             for name, value in loaded.items() if getattr(config, name) != value]
    if diffs:
        raise ModelLoadError(
            f"model {config.model!r} loads here, but not as index {index_dir} was built with it; its query "
            "vectors would not be comparable.\n  " + "\n  ".join(diffs)
            + "\nInstall the model the index was built with (same weights), or search on that machine.")
    return embedder


def check_k(k: object) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise IndexerError(f"k must be a whole number, at least 1 (got {k!r})")


def _block_rows(dim: int, n_queries: int) -> int:
    # per row: its float32 vector, a float32 score and an int64 partition index per query
    return max(1, BLOCK_BYTES // (4 * dim + 13 * n_queries))


def _distinct(cand: np.ndarray, cand_scores: np.ndarray, row_ids: Sequence[str], base: int, k: int,
              every_row: bool) -> list[tuple[float, int]] | None:
    """(score, row) of the best row of each of the `k` best documents among candidate rows of one
    block, best first (ties: row order); None when the candidates, not `every_row` of the block, hold
    fewer than `k` documents with a finite score and could be missing some."""
    order = np.lexsort((cand, -cand_scores))
    seen: set[str] = set()
    out: list[tuple[float, int]] = []
    for j in order:
        s = float(cand_scores[j])
        if s == -np.inf:
            return out  # the rest score no better: unwritten rows
        row = base + int(cand[j])
        doc = row_ids[row]
        if doc not in seen:
            seen.add(doc)
            out.append((s, row))
            if len(out) == k:
                return out
    return out if every_row else None


def _block_best(scores: np.ndarray, row_ids: Sequence[str], base: int, k: int
                ) -> list[list[tuple[float, int]]]:
    """For each query (row of `scores`), its `k` best documents in this block (`_distinct`)."""
    n = scores.shape[1]
    take = min(n, 2 * k)  # a document often has several chunks among its query's best rows
    cand = np.argpartition(scores, n - take, axis=1)[:, n - take:] if take < n \
        else np.broadcast_to(np.arange(n), scores.shape)
    out = []
    for i in range(len(scores)):
        picks = _distinct(cand[i], scores[i, cand[i]], row_ids, base, k, take == n)
        more = take
        while picks is None:  # few documents own the best rows: widen this query's candidates
            more = min(n, more * 4)
            wide = np.argpartition(scores[i], n - more)[n - more:] if more < n else np.arange(n)
            picks = _distinct(wide, scores[i, wide], row_ids, base, k, more == n)
        out.append(picks)
    return out


def search_rows(rows: ChunkRows, queries: np.ndarray, k: int = 10, *, normalized: bool = True,
                block_rows: int | None = None) -> list[list[Hit]]:
    """The `k` best documents for each query vector (rows of `queries`), best first, exact.

    `normalized`: the rows are unit vectors (scores are dot products); otherwise both sides are
    normalized on the fly. `block_rows` overrides the rows read at a time (tests)."""
    check_k(k)
    q = np.asarray(queries, dtype=np.float32)
    vectors = rows.vectors
    n_rows = len(vectors)
    if q.ndim != 2:
        raise IndexerError(f"query vectors must be a 2-D array (queries, dim), got shape {q.shape}")
    if n_rows and q.shape[1] != vectors[0:1].shape[1]:
        raise IndexerError(f"query vectors have {q.shape[1]} dims but the index's have "
                           f"{vectors[0:1].shape[1]}")
    norms = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms == 0))
    if len(bad):
        raise IndexerError(f"query vector {bad[0] + 1} is zero or not finite; it can match nothing")
    if not normalized:
        q = q / norms[:, None]
    ids = rows.ids
    best: list[dict[str, tuple[float, int]]] = [{} for _ in range(len(q))]
    for q0 in range(0, len(q), QUERY_BATCH):
        qb = q[q0:q0 + QUERY_BATCH]
        step = block_rows or _block_rows(q.shape[1], len(qb))
        for start in range(0, n_rows, step):
            block = np.asarray(vectors[start:start + step], dtype=np.float32)
            scores = qb @ block.T  # (queries, rows)
            # A row with a non-finite value (never written: NaN) scores non-finite against any query, so
            # one query's scores find them all; such rows are never returned.
            unusable = ~np.isfinite(scores[0])
            if not normalized:
                norms = np.linalg.norm(block, axis=1)
                unusable |= norms == 0
                with np.errstate(divide="ignore", invalid="ignore"):
                    scores /= norms
            if unusable.any():
                scores[:, unusable] = -np.inf
            per_query = _block_best(scores, ids, start, k)
            for i in range(len(qb)):
                found = best[q0 + i]
                for s, r in per_query[i]:
                    doc = ids[r]
                    if doc not in found or s > found[doc][0]:
                        found[doc] = (s, r)
                if len(found) > k:  # a document dropped here is back if a later block scores it higher
                    kept = heapq.nsmallest(k, found.items(), key=lambda item: (-item[1][0], item[1][1]))
                    best[q0 + i] = dict(kept)
    ordinals, starts, ends = rows.ordinals, rows.starts, rows.ends
    out = []
    for found in best:
        ranked = sorted(found.items(), key=lambda item: (-item[1][0], item[1][1]))[:k]
        out.append([Hit(doc, s, int(ordinals[r]), int(starts[r]), int(ends[r])) for doc, (s, r) in ranked])
    return out


def served_texts(conn: sqlite3.Connection, ids: Iterable[str], records: Iterable[object]) -> dict[str, str]:
    """The texts of `ids` found in `records` (a source re-read), kept only where the text is the version
    the index serves (same content hash): a span is an offset into that version and into no other."""
    wanted = served_hashes(conn, list(dict.fromkeys(ids)))
    out: dict[str, str] = {}
    for rec in records:
        if isinstance(rec, Record) and rec.id in wanted and rec.id not in out \
                and content_hash(rec.text) == wanted[rec.id]:
            out[rec.id] = rec.text
            if len(out) == len(wanted):
                break
    return out


def snippet(text: str, hit: Hit, width: int = 160) -> str:
    """The hit's passage, whitespace collapsed, cut to about `width` characters."""
    passage = " ".join(text[hit.start:hit.end].split())
    return passage if len(passage) <= width else passage[:width - 1].rstrip() + "…"
