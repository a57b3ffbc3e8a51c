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
        f = self._open()
        n = 0
        name, id_field, text_field, template = self.name, self.id_field, self.text_field, self.template
        try:
            for n, line in enumerate(f, 1):
                try:
                    row = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    if line.strip():  # a blank line is not a record
                        yield Skip(f"{name}:{n}", f"not valid JSON ({exc})")
                    continue
                if type(row) is not dict:
                    yield Skip(f"{name}:{n}", f"expected a JSON object, got {type(row).__name__}")
                    continue
                yield record_from_fields(row, id_field, text_field, name, n, template)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(
                f"{self.name} broke off after line {n}: {exc}; the lines before it were read. "
                "Fix or re-create the file and sync again (no document was deleted)"
            ) from exc
        finally:
            if self.path is not None:
                f.close()
