"""Text templates: the embedded text composed from fields of a record, e.g. "{title}: {text}".

A template is Python format syntax restricted to plain field names: "{title}" takes the record's
"title" field, "{{" and "}}" are literal braces. Attribute and index access ("{a.b}", "{a[0]}"),
conversions ("{a!r}") and format specs ("{a:>10}") are refused when the template is parsed, before
anything is read or written. A field's value must be a string or a number; a record without it is
skipped with a warning naming where it was read, like a record without its text.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import IndexerError

__all__ = ["Template"]


@dataclass(frozen=True)
class Template:
    source: str
    # The template cut into (literal text, field name or None), as string.Formatter parses it.
    parts: tuple[tuple[str, str | None], ...]

    @property
    def fields(self) -> tuple[str, ...]:
        """The field names, each once, in order of first use."""
        return tuple(dict.fromkeys(name for _, name in self.parts if name is not None))

    @classmethod
    def parse(cls, source: str) -> Template:
        def refuse(why: str) -> IndexerError:
            return IndexerError(f"--template {source!r}: {why}; write fields as {{name}} (e.g. "
                                "\"{title}: {text}\") and literal braces as {{ and }}")

        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:  # an unmatched brace
            raise refuse(str(exc)) from exc
        parts: list[tuple[str, str | None]] = []
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None))
                continue
            if not name:
                raise refuse("{} names no field")
            if any(c in name for c in ".[]"):
                raise refuse(f"{{{name}}} is not a plain field name (no attributes or indexes)")
            if spec or conversion:
                raise refuse(f"field {name!r} has a conversion or format spec, which templates do not take")
            parts.append((literal, name))
        if not any(name for _, name in parts):
            raise refuse("it names no field, so every document would get the same text")
        return cls(source, tuple(parts))

    def compose(self, row: Mapping[str, object]) -> str | tuple[str, str]:
        """The composed text, or (field, reason) for the first field that cannot be used."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            value = row.get(name)
            if value is None:
                return name, f"no {name!r} field (the --template needs it)"
            if isinstance(value, str):
                out.append(value)
            elif isinstance(value, int | float) and not isinstance(value, bool):
                out.append(str(value))
            else:
                return name, (f"{name!r} must be a string or a number for the --template, got "
                              f"{type(value).__name__}")
        return "".join(out)
