from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Record", "Skip", "record_from_fields"]


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    text: str
    where: str  # "file:line" or "file row N", for messages


@dataclass(frozen=True, slots=True)
class Skip:
    where: str
    reason: str
    id: str | None = None  # known when only the text was bad: such a document is not "missing"


def _valid_id(value: object) -> str | None:
    if isinstance(value, str) and value:
        return value if _is_unicode(value) else None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def record_from_fields(row: Mapping[str, object], id_field: str, text_field: str,
                       where: str) -> Record | Skip:
    """Validate one row: the one place that decides which ids and texts are usable."""
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
    return Record(doc_id, text, where)


def _is_unicode(s: str) -> bool:
    """False for a str holding lone surrogates (JSON "\\ud800" escapes, undecodable file names)."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
