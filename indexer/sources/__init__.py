"""Document sources: stream (id, text) records from files, directories and stdin in bounded memory.

A reader yields `Record` for each usable document and `Skip` for each unusable one, with the file and
line (or row) and the reason, so that the scan can count and report it. A source that cannot be read at
all raises `SourceError` from `open_source`, before anything is written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import SourceError
from ._records import Record, Skip, record_from_fields
from ._template import Template
from .csv_rows import CsvSource
from .jsonl import JsonlSource
from .parquet import ParquetSource
from .textdir import TextDirSource

__all__ = ["IterableSource", "Record", "Skip", "Source", "Template", "open_source", "open_sources"]

Source = JsonlSource | CsvSource | ParquetSource | TextDirSource


def open_source(spec: str, id_field: str = "id", text_field: str = "text",
                template: Template | None = None) -> Source:
    """Check that `spec` can be read and return its reader; raises SourceError naming what to fix.
    With a `template`, each record's text is composed from its fields (sources/_template.py)."""
    if spec == "-":
        return JsonlSource(None, id_field, text_field, template)
    path = Path(spec)
    if not path.exists():
        raise SourceError(f"source {spec} does not exist; give a .jsonl, .jsonl.gz, .csv, .parquet "
                          "file, a directory of text files, or - for JSONL on stdin")
    if path.is_dir():
        return TextDirSource(path, template)
    name = path.name.lower()
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise SourceError(f"source {spec} cannot be read: {exc.strerror}; check its permissions") from exc
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz")):
        return JsonlSource(path, id_field, text_field, template)
    if name.endswith(".csv"):
        return CsvSource(path, id_field, text_field, template)
    if name.endswith(".parquet"):
        return ParquetSource(path, id_field, text_field, template)
    raise SourceError(f"source {spec} has an unknown format; use .jsonl, .jsonl.gz, .csv, .parquet, "
                      "a directory of text files, or - for JSONL on stdin")


def open_sources(specs: Iterable[str], id_field: str = "id", text_field: str = "text",
                 template: Template | None = None) -> list[Source]:
    """Open every source first, so that one unreadable source stops the sync before any write."""
    specs = list(specs)
    if not specs:
        raise SourceError("no source given; name at least one file, directory, or - for stdin")
    return [open_source(s, id_field, text_field, template) for s in specs]


class IterableSource:
    """Documents given from Python: dicts with id and text, or (id, text) pairs."""

    def __init__(self, docs: Iterable[object], id_field: str = "id", text_field: str = "text",
                 template: Template | None = None) -> None:
        self.docs = docs
        self.template = template
        self.id_field = id_field
        self.text_field = text_field
        self.name = "<python>"

    def __iter__(self) -> Iterator[Record | Skip]:
        for n, doc in enumerate(self.docs, 1):
            where = f"{self.name} item {n}"
            if isinstance(doc, dict):
                yield record_from_fields(doc, self.id_field, self.text_field, where, template=self.template)
            elif isinstance(doc, (tuple, list)) and len(doc) == 2:
                yield record_from_fields({"id": doc[0], "text": doc[1]}, "id", "text", where,
                                         template=self.template)
            else:
                yield Skip(where, f"expected a dict with {self.id_field!r} and {self.text_field!r} "
                                  f"or an (id, text) pair, got {type(doc).__name__}")
