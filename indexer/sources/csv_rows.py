from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError
from ._records import Record, Skip, record_from_fields
from ._template import Template

csv.field_size_limit(sys.maxsize)


class CsvSource:
    """A UTF-8 CSV file with a header row naming the id and text columns."""

    def __init__(self, path: Path, id_field: str, text_field: str, template: Template | None = None) -> None:
        self.path = path
        self.template = template
        self.name = str(path)
        self.id_field = id_field
        self.text_field = text_field
        # utf-8-sig: a byte order mark (as spreadsheet programs write) is not part of the first column.
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f), [])
        if not header:
            raise SourceError(f"{path} is empty: a CSV source needs a header row naming the "
                              f"{id_field!r} and {text_field!r} columns")
        needed = (id_field, *(template.fields if template else (text_field,)))
        missing = [c for c in dict.fromkeys(needed) if c not in header]
        if missing:
            fix = "fix the --template or the file" if template else "name them with --id-field/--text-field"
            raise SourceError(
                f"{path}: header has no column {', '.join(map(repr, missing))} "
                f"(columns: {', '.join(header) or 'none'}); {fix}"
            )

    def __iter__(self) -> Iterator[Record | Skip]:
        with self.path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            row_start = 2
            try:
                _ = reader.fieldnames  # reads the header, which may itself span lines
                row_start = reader.line_num + 1
                for row in reader:
                    line, row_start = row_start, reader.line_num + 1
                    if None in row:
                        yield Skip(f"{self.name}:{line}", "more fields than the header has")
                        continue
                    yield record_from_fields(row, self.id_field, self.text_field, self.name, line,
                                             self.template)
            except UnicodeDecodeError as exc:
                raise SourceError(
                    f"{self.name}: not valid UTF-8 near line {row_start}; re-save it as UTF-8 "
                    "and sync again (rows before it were read, no document was deleted)"
                ) from exc
            except csv.Error as exc:
                raise SourceError(f"{self.name}:{reader.line_num}: malformed CSV ({exc})") from exc
