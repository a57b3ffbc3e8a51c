"""Texts waiting to be embedded: the manifest's `staged` table (migrations/0009).

A content waiting to be embedded has one staged row holding its text, of the content's own number
(`contents.seq`, the order claims take them). A claim marks the first free rows with its id (`claim_id`) and
keeps their range (`claims.first_seq`..`last_seq`), so that freeing a claim's rows walks that range
only; a commit deletes the rows it embedded. A content that failed for good keeps its row, marked
`FAILED` (0, never a claim's id), for `sync --retry-failed`. These functions run inside the Manifest's
write transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import orjson

from . import _counts
from ._queries import named_queries
from ._sql import in_batches

_QUERIES = named_queries("staging.sql")

FAILED = 0  # staged.claim_id of a content that failed for good
_SPAN_LIMIT = 2**31  # bytes of text staged by one statement


# A content as a scan batch's documents need it: (seq, state, parts, truncated). A plain tuple: a
# scan makes one per new text, and a NamedTuple's cost showed in the scan's profile.
Content = tuple[int, str, int, int]


def stage_texts(conn: sqlite3.Connection, rows: Sequence[tuple[bytes, int, str, int]],
                ) -> tuple[int, dict[bytes, Content]]:
    """Add the contents `rows` (hash, chars, text, truncated) not known yet, pending, their texts staged
    in claim order (shortest first, so that a claim holds similar lengths); stage again the text of a
    known pending content that lost its own (re-queued by `verify --repair`). Returns how many
    contents it added, and every one of `rows` as it is now."""
    if not rows:
        return 0, {}
    # As columns, distinct hashes in claim order: sorted by hash, then (stable) by length.
    hs, chars, texts, cuts = zip(*rows, strict=True)
    order = list(dict(zip(hs, range(len(hs)), strict=True)).values())
    order.sort(key=hs.__getitem__)
    order.sort(key=chars.__getitem__)
    ordered = list(map(hs.__getitem__, order))
    first = int(conn.execute(_QUERIES["next_content_number"]).fetchone()[0])
    hashes = b"".join(ordered)
    # A text's number is `first` + its place in `order`: the numbers from `first` on are those it
    # added (none existed before), read back only where some text was known already (a row returned
    # would cost a hand-over of the GIL).
    conn.execute(_QUERIES["add_contents"],
                 {"first": first, "hashes": hashes,
                  "rows": orjson.dumps([2 * chars[i] + bool(cuts[i]) for i in order])})
    found: dict[bytes, Content] = {}
    if conn.execute(_QUERIES["count_contents_from"], (first,)).fetchone()[0] == len(order):
        added = dict(zip(ordered, range(first, first + len(order)), strict=True))
        _stage_added(conn, first, list(map(texts.__getitem__, order)), hashes)
    else:
        added = {ordered[seq - first]: seq for (seq,) in conn.execute(_QUERIES["contents_from"], (first,))}
        found = contents_of(conn, [h for h in ordered if h not in added])
        _stage_added(conn, first, [texts[i] if hs[i] in added else None for i in order], hashes)
        text_of = dict(zip(hs, texts, strict=True))
        conn.executemany(_QUERIES["stage_text"],
                         [(seq, h, text_of[h]) for seq, h in _without_text(conn, found)])
    _counts.add(conn, "pending", contents=len(added))
    cut_of = dict(zip(hs, cuts, strict=True))
    found.update((h, (seq, "pending", 0, cut_of[h])) for h, seq in added.items())
    return len(added), found


def _stage_added(conn: sqlite3.Connection, first: int, texts: list[str | None], hashes: bytes) -> None:
    """Stage the texts of the contents numbered `first` + k that stage_texts added (texts[k], None
    where it added none; hashes[16k:16k+16] their hashes), in a statement for up to 2 GiB of text, not
    one a row: the texts UTF-8, end to end, each one's place as one number (start x 2^32 + bytes). No
    value is bound a row, and a text holding a NUL (which SQLite's JSON functions cut) goes whole."""
    runs: list[tuple[int, list[int | None], list[bytes]]] = [(0, [], [])]  # (first k, spans, texts)
    at = 0  # bytes in the last run
    for k, text in enumerate(texts):
        blob = None if text is None else text.encode("utf-8")
        if blob is not None and len(blob) >= _SPAN_LIMIT:  # (a text of 2 GiB or more: bound alone)
            conn.execute(_QUERIES["stage_text"],
                         (first + k, hashes[16 * k:16 * k + 16], text))
            blob = None
        elif blob is not None and at + len(blob) >= _SPAN_LIMIT:
            runs.append((k, [], []))
            at = 0
        _, spans, blobs = runs[-1]
        spans.append(None if blob is None else at << 32 | len(blob))
        if blob is not None:
            blobs.append(blob)
            at += len(blob)
    for n, (begin, spans, blobs) in enumerate(runs):
        end = runs[n + 1][0] if n + 1 < len(runs) else len(texts)
        conn.execute(_QUERIES["stage_texts"],
                     {"first": first + begin, "hashes": hashes[16 * begin:16 * end],
                      "texts": b"".join(blobs), "spans": orjson.dumps(spans)})


def _without_text(conn: sqlite3.Connection, found: dict[bytes, Content]) -> list[tuple[int, bytes]]:
    """(seq, hash) of the plain pending contents among `found` that have no staged text, in order."""
    waiting = {seq: h for h, (seq, state, parts, _) in found.items() if state == "pending" and parts == 0}
    if not waiting:
        return []
    staged = {seq for (seq,) in conn.execute(_QUERIES["staged_of"], (orjson.dumps(list(waiting)),))}
    return sorted((seq, h) for seq, h in waiting.items() if seq not in staged)


def contents_of(conn: sqlite3.Connection, hashes: Sequence[bytes]) -> dict[bytes, Content]:
    """The contents of these hashes (those that exist)."""
    found: dict[bytes, Content] = {}
    for part, marks in in_batches(hashes):
        found.update((h, (seq, state, parts, cut)) for h, seq, state, parts, cut in conn.execute(
            f"SELECT hash, seq, state, parts, truncated FROM contents WHERE hash IN ({marks})", part))
    return found


def free_claimed(conn: sqlite3.Connection, claim_id: int) -> None:
    """The staged rows the claim still holds are free to claim again."""
    conn.execute(_QUERIES["free_claimed"], (claim_id,))


def claimed_count(conn: sqlite3.Connection) -> int:
    """Contents held by active claims."""
    return int(conn.execute(_QUERIES["count_claimed"]).fetchone()[0])
