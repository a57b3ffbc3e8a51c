from __future__ import annotations

import gzip
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import orjson

from ..errors import SourceError
from ._records import Record, Skip, record_from_fields
from ._template import Template

_CUT = ("; it is the last line, so the source looks cut mid-record (a copy cut short, a producer killed "
        "mid-stream?): --delete-missing deletes nothing from it")


class JsonlSource:
    """One JSON object a line, optionally gzipped; `None` reads stdin."""

    def __init__(self, path: Path | None, id_field: str, text_field: str,
                 template: Template | None = None) -> None:
        self.path = path
        self.template = template
        self.name = "<stdin>" if path is None else str(path)
        self.id_field = id_field
        self.text_field = text_field

    def _open(self) -> BinaryIO:
        if self.path is None:
            return sys.stdin.buffer
        if self.path.name.lower().endswith(".gz"):
            return gzip.open(self.path, "rb")  # type: ignore[return-value]
        return self.path.open("rb")

    def __iter__(self) -> Iterator[Record | Skip]:
        """Records and skips in file order. A source is cut when its last non-blank line is not a JSON
        object (not valid JSON, or valid JSON of another kind with no line end): a copy cut short or a
        producer killed mid-record ends like that. That last line is a Skip with `cut` set. A last line
        that is a whole JSON object is whole even without a line end: no proper prefix of an object is
        one. (A cut that falls exactly on a line end cannot be told from a whole file.)"""
        f = self._open()
        n = 0
        name, id_field, text_field, template = self.name, self.id_field, self.text_field, self.template
        # A line that is not valid JSON is held until a later record shows that the file goes on.
        held: Skip | None = None
        try:
            for n, line in enumerate(f, 1):
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if line.strip():  # a blank line is not a record
                        if held is not None:
                            yield held
                        held = Skip(f"{name}:{n}", f"not valid JSON ({exc})")
                    continue
                if held is not None:
                    yield held
                    held = None
                if type(row) is not dict:
                    unterminated = not line.endswith(b"\n")
                    yield Skip(f"{name}:{n}", f"expected a JSON object, got {type(row).__name__}"
                               + (_CUT if unterminated else ""), cut=unterminated)
                    continue
                yield record_from_fields(row, id_field, text_field, name, n, template)
            if held is not None:
                yield Skip(held.where, held.reason + _CUT, cut=True)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"{self.name} broke off after line {n}: {exc}; the lines before it were read. "
                "Fix or re-create the file and sync again (no document was deleted)"
            ) from exc
        finally:
            if self.path is not None:
                f.close()
