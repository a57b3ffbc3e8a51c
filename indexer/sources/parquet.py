from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SourceError
from ._records import Record, Skip, record_from_fields
from ._template import Template


class ParquetSource:
    """A Parquet file with a string (or integer) id column and a string text column."""

    def __init__(self, path: Path, id_field: str, text_field: str, template: Template | None = None) -> None:
        self.path = path
        self.template = template
        self.name = str(path)
        self.id_field = id_field
        self.text_field = text_field
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise SourceError(f"{path} is not a readable Parquet file ({exc})") from exc
        wanted = [(id_field, _is_id_type)] + ([(f, _is_field_type) for f in template.fields if f != id_field]
                                              if template else [(text_field, _is_text_type)])
        for col, ok in wanted:
            if col not in schema.names:
                fix = "fix the --template" if template and col != id_field else \
                    "name it with --id-field/--text-field"
                raise SourceError(f"{path}: no column {col!r} (columns: {', '.join(schema.names)}); {fix}")
            if not ok(schema.field(col).type):
                raise SourceError(f"{path}: column {col!r} has type {schema.field(col).type}; ids must be "
                                  "strings or integers, texts strings, template fields strings or numbers")
        self.columns = [col for col, _ in wanted]

    def __iter__(self) -> Iterator[Record | Skip]:
        row = 0
        try:
            pf = pq.ParquetFile(self.path)
            for batch in pf.iter_batches(batch_size=8192, columns=self.columns):
                if self.template is None:
                    ids = batch.column(0).to_pylist()
                    texts = batch.column(1).to_pylist()
                    for doc_id, text in zip(ids, texts, strict=True):
                        row += 1
                        yield record_from_fields({self.id_field: doc_id, self.text_field: text},
                                                 self.id_field, self.text_field, f"{self.name} row {row}")
                    continue
                for fields in batch.to_pylist():
                    row += 1
                    yield record_from_fields(fields, self.id_field, self.text_field, f"{self.name} row {row}",
                                             template=self.template)
        except (OSError, pa.ArrowException) as exc:
            raise SourceError(f"{self.name} broke off after row {row}: {exc}") from exc


def _is_id_type(t: pa.DataType) -> bool:
    return _is_text_type(t) or bool(pa.types.is_integer(_values(t)))


def _is_text_type(t: pa.DataType) -> bool:
    t = _values(t)
    is_view = getattr(pa.types, "is_string_view", None)  # pyarrow >= 16
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or (is_view is not None and is_view(t)))


def _is_field_type(t: pa.DataType) -> bool:
    return _is_text_type(t) or bool(pa.types.is_integer(_values(t)) or pa.types.is_floating(_values(t)))


def _values(t: pa.DataType) -> pa.DataType:
    """A dictionary-encoded (categorical) column reads as its values."""
    return t.value_type if pa.types.is_dictionary(t) else t
