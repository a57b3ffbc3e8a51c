from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ._template import Template

__all__ = ["Record", "Skip", "record_from_fields"]


@dataclass(slots=True)
class Record:
    """A usable document. `at` and `line` say where it was read: "file" and its line, or the whole
    place ("file row N", a path) with no line. The "file:line" text is made only when asked for: a scan
    of millions of documents rarely needs it."""

    id: str
    text: str
    at: str
    line: int | None = None

    @property
    def where(self) -> str:
        return self.at if self.line is None else f"{self.at}:{self.line}"


@dataclass(frozen=True, slots=True)
class Skip:
    where: str
    reason: str
    id: str | None = None  # known when only the text was bad: such a document is not "missing"


def record_from_fields(row: Mapping[str, object], id_field: str, text_field: str,
                       at: str, line: int | None = None, template: Template | None = None) -> Record | Skip:
    """Validate one row: the one place that decides which ids and texts are usable. With a `template`,
    the text is composed from the row's fields instead of read from `text_field`."""
    if template is not None:
        composed = template.compose(row)
        known = {id_field: row[id_field]} if id_field in row else {}
        if isinstance(composed, str):
            return record_from_fields({**known, text_field: composed}, id_field, text_field, at, line)
        valid_id = _valid_id(row.get(id_field))
        if valid_id is None:  # the id's own problem is reported first, as without a template
            return record_from_fields(known, id_field, text_field, at, line)
        return Skip(at if line is None else f"{at}:{line}", composed[1], valid_id)
    doc_id, text = row.get(id_field), row.get(text_field)
    # The common case in few steps: isascii() is O(1), so only non-ASCII strings pay for a UTF-8 check.
    if (type(doc_id) is str and doc_id and (doc_id.isascii() or _is_unicode(doc_id))
            and type(text) is str and text and not text.isspace() and (text.isascii() or _is_unicode(text))):
        return Record(doc_id, text, at, line)
    where = at if line is None else f"{at}:{line}"
    if id_field not in row:
        return Skip(where, f"no {id_field!r} field; name the id field with --id-field")
    doc_id = _valid_id(row[id_field])
    if doc_id is None:
        value = row[id_field]
        got = "a string that is not valid Unicode" if isinstance(value, str) and value \
            else type(value).__name__
        return Skip(where, f"{id_field!r} must be a non-empty string or an integer, got {got}")
    if text_field not in row:
        return Skip(where, f"no {text_field!r} field; name the text field with --text-field", doc_id)
    text = row[text_field]
    if not isinstance(text, str):
        return Skip(where, f"{text_field!r} must be a string, got {type(text).__name__}", doc_id)
    if not text.strip():
        return Skip(where, "empty text: nothing to embed", doc_id)
    if not _is_unicode(text):
        return Skip(where, "text is not valid Unicode (lone surrogate escape)", doc_id)
    return Record(doc_id, text, at, line)


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value if _is_unicode(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _is_unicode(s: str) -> bool:
    """False for a str holding lone surrogates (JSON "\\ud800" escapes, undecodable file names)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
