from __future__ import annotations

import csv
import re
import sys
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..errors import SourceError
from ._records import Record, Skip, _is_unicode, record_from_fields
from ._template import Template

csv.field_size_limit(sys.maxsize)

# Splits after a lone \r (an old Mac line end): the file is read in lines ending at \r\n, \r or \n,
# as Python's text files with newline="" are, so that csv sees the same lines.
_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


class _Lines:
    """The file's lines for csv.reader, each decoded on its own: one invalid UTF-8 byte spoils only
    the line it is on (kept with surrogate escapes and noted in `bad`, with its true line number),
    where a text file would stop the whole read at a buffer boundary far from that line."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.count = 0  # lines handed to csv
        self.bad: deque[tuple[int, str]] = deque()  # (line, what) of lines that are not valid UTF-8
        self.unterminated = False  # the last line handed out had no line end: the file ends mid-line
        self.exhausted = False  # csv asked for a line after the last one

    def __iter__(self) -> Iterator[str]:
        first = True
        for raw in self.f:
            lone_cr = b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n")  # (most lines: none)
            for piece in _LONE_CR.split(raw) if lone_cr else (raw,):
                if not piece:
                    continue
                self.count += 1
                try:
                    line = piece.decode("utf-8")
                except UnicodeDecodeError as exc:
                    line = piece.decode("utf-8", "surrogateescape")
                    self.bad.append((self.count, f"byte 0x{piece[exc.start]:02x} at column {exc.start + 1}"))
                if first:  # utf-8-sig: a byte order mark (spreadsheets write one) is not part of a field
                    line, first = line.removeprefix("\ufeff"), False
                self.unterminated = not piece.endswith((b"\n", b"\r"))
                yield line
        self.exhausted = True

    def bad_in(self, last: int) -> tuple[int, str] | None:
        """The first line up to `last` that is not valid UTF-8, if any (forgetting those up to it)."""
        found = None
        while self.bad and self.bad[0][0] <= last:
            entry = self.bad.popleft()
            found = found or entry
        return found


class CsvSource:
    """A UTF-8 CSV file with a header row naming the id and text columns.

    Rows that cannot be used are skipped with a warning naming their first line, and the rest is read:
    a row with a byte that is not UTF-8, a malformed row (text after a closing quote, ...), a row with
    more fields than the header. The source is cut (a Skip with `cut` set: no deletion from it) when
    a quoted field is never closed (every line after its opening quote would be one field) or when
    the last row has no line end (it may have been cut mid-field; it is skipped, not read in part).
    """

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
        name, id_field = self.name, self.id_field
        with self.path.open("rb") as f:
            lines = _Lines(f)
            # strict: a malformed row raises (and is skipped) instead of being read as something else,
            # and a quote never closed raises at the end instead of swallowing every row after it.
            reader = csv.DictReader(lines, strict=True)
            try:
                try:
                    _ = reader.fieldnames  # reads the header, which may itself span lines
                except csv.Error as exc:
                    raise SourceError(f"{name}: the header row is malformed CSV ({exc})") from exc
                lines.bad_in(lines.count)
                row_start = lines.count + 1
                while True:
                    try:
                        row = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as exc:  # (DictReader.line_num is not updated on an error)
                        line, row_start = row_start, lines.count + 1
                        lines.bad_in(lines.count)
                        if lines.exhausted:
                            yield Skip(f"{name}:{line}", "a quoted field opened on this row is never "
                                       f"closed, so lines {line}-{lines.count} were not read as rows: "
                                       "the file looks cut mid-field (or holds a stray quote); "
                                       "--delete-missing deletes nothing from it", cut=True)
                            return
                        yield Skip(f"{name}:{line}", f"malformed CSV ({exc}); quote a field that holds "
                                                     "quotes, commas or line breaks")
                        continue
                    line, row_start = row_start, lines.count + 1
                    bad = lines.bad_in(lines.count) if lines.bad else None
                    if lines.unterminated:
                        yield Skip(f"{name}:{line}", "the last row has no line end, so it may have been cut "
                                   "mid-field: not read, and --delete-missing deletes nothing from this "
                                   "file. If the file is whole, end it with a newline",
                                   _known_id(row, id_field), cut=True)
                    elif bad is not None:
                        yield Skip(f"{name}:{bad[0]}", f"not valid UTF-8 ({bad[1]}); re-save the file as "
                                                       "UTF-8", _known_id(row, id_field))
                    elif None in row:
                        yield Skip(f"{name}:{line}", "more fields than the header has")
                    else:
                        yield record_from_fields(row, id_field, self.text_field, name, line, self.template)
            except OSError as exc:
                raise SourceError(f"{name} broke off after line {lines.count}: {exc}; the lines before it "
                                  "were read. Fix the file and sync again (no document was deleted)") from exc


def _known_id(row: dict[str | None, object], id_field: str) -> str | None:
    """The id of a row skipped for its text or its end: such a document is not "missing"."""
    doc_id = row.get(id_field)
    return doc_id if isinstance(doc_id, str) and doc_id and _is_unicode(doc_id) else None
