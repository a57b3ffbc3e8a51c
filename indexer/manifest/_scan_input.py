"""A scan batch as the manifest takes it: the work on each item that needs no database (its text's hash,
its id checked against the batch's others, where it was read), done by `scan_input` where the batch
was read. The sync calls it in its reader thread, which waits on the queue to the scan most of the
time, so that the scan's own thread does little but SQL (which lets go of the GIL).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import xxhash

from ..sources import Record, Skip

NO_HASH = bytes(16)


@dataclass(frozen=True)
class ScanInput:
    items: Sequence[Record | Skip]
    at: str | None  # the file of the batch's first record: places in it are line numbers
    ids: list[str | None]  # item k's id where it is a record to scan, else None
    hashes: list[bytes]  # item k's text hash (NO_HASH where it is none)
    places: list[int | str]  # where each item was read: its line in `at`, or its whole place
    first_of: dict[str, int]  # id -> k of the batch's first record with it
    not_scanned: list[int]  # k of the skips and of the records whose id came before in the batch
    # (k, id) of the ids holding a NUL, None in `ids`: SQLite's JSON functions cut a string there
    odd: list[tuple[int, str]]


def scan_input(items: Sequence[Record | Skip]) -> ScanInput:
    ids: list[str | None] = [None] * len(items)
    hashes = [NO_HASH] * len(items)
    places: list[int | str] = []
    first_of: dict[str, int] = {}
    not_scanned: list[int] = []
    at = next((item.at for item in items if isinstance(item, Record)), None)
    digest = xxhash.xxh3_128_digest
    for k, item in enumerate(items):
        if isinstance(item, Skip):
            places.append(item.where)
            not_scanned.append(k)
            continue
        places.append(item.line if item.line is not None and item.at == at else item.where)
        if item.id in first_of:
            not_scanned.append(k)
            continue
        first_of[item.id] = k
        ids[k] = item.id
        hashes[k] = digest(item.text.encode("utf-8"))
    odd = [(k, i) for i, k in first_of.items() if "\x00" in i] if "\x00" in "".join(first_of) else []
    for k, _ in odd:
        ids[k] = None
    return ScanInput(items, at, ids, hashes, places, first_of, not_scanned, odd)
