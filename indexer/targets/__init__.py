"""Push targets: vector stores that `indexer push` keeps in line with an index.

A target is one table (collection) of one store, holding the rows of the served documents: one row a
document (id, vector), or at chunk level one row a chunk (id, chunk, start, end, vector), and nothing
that the index does not hold. push.py decides what to send (from what the manifest says each target
holds) and in which order; a target only carries out the operations, each of which must be
idempotent, because a push that stops part-way does them again:

    insert(rows)        rows of documents the target holds no row of (a plain append where the store
                        has one)
    replace(ids, rows)  the rows of documents `ids` become `rows`: rows of these ids that `rows` lacks
                        are removed (a document now in fewer chunks), the others added or overwritten
    delete(ids)         remove every row of these documents; ids it does not hold are no error

Adding a store (Qdrant, pgvector, ...) is one module here, `indexer/targets/<scheme>.py`, with a
`make(location, table) -> Target`; `--to <scheme>:<location>` finds it. Its client library is an
optional extra, imported only in that module, and a missing one raises MissingDependencyError naming
the extra (docs/PUSH.md).
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from ..errors import IndexerError

__all__ = ["SCHEMES", "Target", "open_target"]

SCHEMES = ("lancedb",)


class Target(Protocol):
    # A stable name of the table the rows go to, e.g. "lancedb:/abs/path#vectors": the manifest keeps
    # what was pushed under it, so two spellings of one table must give the same key.
    key: str

    def columns(self) -> list[str] | None:
        """The table's column names; None if there is no table (it may have been dropped since the
        last push). push.py reads the level a table was pushed at from them ("chunk" or not)."""

    def create(self, schema: Any) -> None:
        """Make the table with this Arrow schema, or check that the existing one has exactly its
        columns; raise IndexerError naming the difference if not (another dimension or dtype)."""

    def count(self) -> int:
        """Rows in the table."""

    def insert(self, rows: Any) -> None:
        """Add rows (an Arrow table) whose ids the table does not hold."""

    def replace(self, ids: list[str], rows: Any) -> None:
        """Make `rows` (an Arrow table, every id of it in `ids`) the table's rows of documents `ids`,
        in one step where the store can do that cheaply (a reader then never sees a document
        half-replaced); else by a delete of their rows and an append."""

    def delete(self, ids: list[str]) -> None:
        """Remove every row with one of these ids."""

    def drop(self) -> None:
        """Remove the table and everything in it (push --replace)."""

    def close(self) -> None: ...


def open_target(spec: str, table: str) -> Target:
    """The target for `--to SCHEME:LOCATION` and a table name."""
    scheme, sep, location = spec.partition(":")
    if not sep or scheme not in SCHEMES or not location:
        raise IndexerError(f"--to {spec!r}: give a target as SCHEME:LOCATION with a scheme of "
                           f"{', '.join(SCHEMES)}, e.g. lancedb:./vectors.lance")
    if not table or not table.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise IndexerError(f"--table {table!r}: use letters, digits, '_', '-' and '.' only")
    module = importlib.import_module(f"{__name__}.{scheme}")
    target: Target = module.make(location, table)
    return target
