"""What the modules that query the manifest share about writing SQL."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

__all__ = ["OWN_DONE", "SERVED_HASH", "in_batches"]

T = TypeVar("T")

# The content a document `d` serves (migrations/0011): its own once that is done (OWN_DONE), else the one
# it served before (NULL: none yet). A commit marks contents done without touching their documents.
OWN_DONE = "(SELECT state FROM contents WHERE hash = d.hash) = 'done'"
SERVED_HASH = f"iif({OWN_DONE}, d.hash, d.ready_hash)"

# Values bound in one `IN (...)`: well under SQLite's limit on a statement's parameters (999 before
# SQLite 3.32), and few enough that each query stays cheap to plan.
IN_BATCH = 500


def in_batches(values: Sequence[T]) -> Iterator[tuple[list[T], str]]:
    """`values` in parts that one statement can bind, each with its placeholders ("?,?,...") for an
    `IN (...)`."""
    for start in range(0, len(values), IN_BATCH):
        part = list(values[start:start + IN_BATCH])
        yield part, ",".join("?" * len(part))
