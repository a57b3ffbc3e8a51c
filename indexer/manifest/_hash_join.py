"""Joins on content hashes done in numpy: a table's 16-byte hashes as (high, low) uint64 keys, and each
key's row in another table found by a sorted search (`_reads.served_singles`)."""

from __future__ import annotations

import numpy as np

from ..errors import ManifestError


def hash_keys(raw: bytes) -> np.ndarray:
    """16-byte hashes end to end as an (n, 2) array of native uint64: (high, low) halves."""
    if len(raw) % 16:
        raise ManifestError("a content hash in the manifest is not 16 bytes long: the manifest is damaged; "
                         "run `indexer verify`")
    return np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)


def lookup(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each key (a row of `keys`), the row of `table` holding it, or -1 (both (n, 2) hash keys)."""
    if not len(table):
        return np.full(len(keys), -1, dtype=np.int64)
    order = np.argsort(table[:, 0])
    high = table[order, 0]
    if (high[1:] == high[:-1]).any():
        # Two hashes share their high half (not seen in practice): search on both halves, as integers.
        order = np.lexsort((table[:, 1], table[:, 0]))
        both = table[order, 0].astype(object) * 2**64 + table[order, 1].astype(object)
        at = np.searchsorted(both, keys[:, 0].astype(object) * 2**64 + keys[:, 1].astype(object))
    else:
        # The keys searched in their own sorted order: each search starts where the one before ended,
        # several times faster than searching them in random order (a cache miss a step).
        by_key = np.argsort(keys[:, 0])
        at = np.empty(len(keys), dtype=np.intp)
        at[by_key] = np.searchsorted(high, keys[by_key, 0])
    rows = order[np.minimum(at, len(order) - 1)]
    return np.where((table[rows, 0] == keys[:, 0]) & (table[rows, 1] == keys[:, 1]), rows, -1)
