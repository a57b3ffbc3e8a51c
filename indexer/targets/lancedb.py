"""LanceDB: a table in a local (or object-store) LanceDB database, `--to lancedb:PATH`.

In a table of documents, a replace is one merge_insert on "id" (one new table version: a reader
sees the old row or the new one). In a table of chunks it is a delete of the documents' rows, then an
append of their new ones: two versions, between which a reader misses those documents. The one-step
form, a merge_insert on ("id", "chunk") that also deletes the rows it did not match
(when_not_matched_by_source_delete), reads the whole table into memory
(`python -m bench lance_replace`), which a large table cannot afford. A push stopped between the two is
finished by the next (push.py marks the documents unknown first). Inserts, of ids the table has never
held, are plain appends (far cheaper on a first push of a large index); deletes are SQL predicates on
"id".
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import IndexerError, MissingDependencyError

INSTALL_HINT = "pip install 'indexer[lancedb]'"
_DELETE_BATCH = 1000  # ids per delete predicate


def make(location: str, table: str) -> LanceDBTarget:
    return LanceDBTarget(location, table)


def _id_in(ids: list[str]) -> str:
    """A predicate on "id", each id an SQL string literal."""
    return "id IN (" + ", ".join("'" + doc_id.replace("'", "''") + "'" for doc_id in ids) + ")"


class LanceDBTarget:
    def __init__(self, location: str, table: str) -> None:
        try:
            import lancedb
        except ImportError as exc:
            raise MissingDependencyError(f"push to LanceDB needs the lancedb package: {INSTALL_HINT}"
                                         ) from exc
        # A local path is made absolute, so that the key is the same from any working directory.
        self.location = location if "://" in location else os.path.abspath(location)
        self.name = table
        self.key = f"lancedb:{self.location}#{table}"
        self.db = lancedb.connect(self.location)
        self._table: Any = None

    def _open(self) -> Any:
        if self._table is None:
            try:
                self._table = self.db.open_table(self.name)
            except ValueError:  # LanceDB's "Table ... was not found"
                return None
        return self._table

    def columns(self) -> list[str] | None:
        table = self._open()
        return None if table is None else list(table.schema.names)

    def create(self, schema: Any) -> None:
        table = self._open()
        if table is None:
            self._table = self.db.create_table(self.name, schema=schema)
            return
        have = {f.name: f.type for f in table.schema}
        wrong = [f"{f.name}: the table has {have.get(f.name, 'no such column')}, the index {f.type}"
                 for f in schema if have.get(f.name) != f.type]
        wrong += [f"{name}: the table has it, the index writes no such column"
                  for name in have if name not in schema.names]
        if wrong:
            raise IndexerError(f"table {self.name!r} in {self.location} does not fit this index ("
                               + "; ".join(wrong) + "); push to another --table, or --replace it")

    def count(self) -> int:
        table = self._open()
        return 0 if table is None else int(table.count_rows())

    def insert(self, rows: Any) -> None:
        self._open().add(rows)

    def replace(self, ids: list[str], rows: Any) -> None:
        table = self._open()
        if "chunk" not in table.schema.names:  # one row a document: every id of `ids` is in `rows`
            table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(rows)
            return
        self.delete(ids)  # every old chunk row, those the new version no longer has included
        table.add(rows)

    def delete(self, ids: list[str]) -> None:
        table = self._open()
        for start in range(0, len(ids), _DELETE_BATCH):
            table.delete(_id_in(ids[start:start + _DELETE_BATCH]))

    def drop(self) -> None:
        if self._open() is not None:
            self.db.drop_table(self.name)
        self._table = None

    def close(self) -> None:
        self._table = None
