"""Results kept as JSON, one file a section (bench/results/KEY.json: title, date, command, library,
machine, provisional note, and the body as blocks of text and tables with their raw cells), and the one
renderer that writes them into bench/RESULTS.md's marked sections (`<!-- BEGIN KEY -->` ...
`<!-- END KEY -->`). Sections with no JSON (hand-written notes, runs from before) are left as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "RESULTS.md"
RESULTS_DIR = BENCH / "results"
HEADER = ("# Benchmark results\n\nEach section is written by the benchmark named in it; re-run that command "
          "to refresh it. Only measured figures appear here.\n")


def fmt(x: object, digits: int = 2) -> str:
    """A table cell: floats with `digits` decimals (none from 1,000 up, with thousands separators),
    ints with separators, anything else as text."""
    if isinstance(x, float):
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{digits}f}"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}"
    return str(x)


def machine_markdown(info: Mapping[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


class Table(str):
    """A Markdown table that keeps its headers and raw cells: a `str` (its Markdown), so that it can be
    joined into text like any other, and a block of its own when a case publishes a list of blocks."""

    headers: list[str]
    rows: list[list[object]]

    def __new__(cls, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
        cells = [[_jsonable(c) for c in r] for r in rows]
        self = super().__new__(cls, markdown_table(list(headers), cells))
        self.headers, self.rows = list(headers), cells
        return self


def _jsonable(x: object) -> object:
    """A cell as JSON keeps it: numbers, strings, booleans and None as they are, anything else as text."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if hasattr(x, "item"):  # a numpy scalar
        return _jsonable(x.item())
    return str(x)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def blocks_of(body: str | Sequence[str]) -> list[dict[str, Any]]:
    """The body as JSON blocks: {"table": {"headers", "rows"}} for a `Table`, {"text": ...} otherwise;
    empty blocks dropped."""
    parts = [body] if isinstance(body, str) else list(body)
    out: list[dict[str, Any]] = []
    for part in parts:
        if isinstance(part, Table):
            out.append({"table": {"headers": part.headers, "rows": part.rows}})
        elif part.strip():
            out.append({"text": part.strip("\n")})
    return out


def render_body(blocks: Sequence[dict[str, Any]]) -> str:
    return "\n\n".join(markdown_table(b["table"]["headers"], b["table"]["rows"]) if "table" in b
                       else str(b["text"]) for b in blocks)


def render(record: dict[str, Any]) -> str:
    """A section of RESULTS.md, from its record."""
    key = record["key"]
    parts = [f"<!-- BEGIN {key} -->", f"## {record['title']}", "", f"- date: {record['date']}",
             f"- command: `{record['command']}`", f"- library: {record['library']}"]
    if record.get("provisional"):
        parts += ["", f"> **Provisional.** {record['provisional']}"]
    parts += ["", render_body(record["blocks"])]
    if record.get("machine"):
        parts += ["", "Machine:", "", machine_markdown(record["machine"])]
    parts.append(f"<!-- END {key} -->")
    return "\n".join(parts)


def splice(text: str, key: str, section: str) -> str:
    """`text` (RESULTS.md) with the section `key` replaced by `section`, or `section` appended."""
    begin, end = f"<!-- BEGIN {key} -->", f"<!-- END {key} -->"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text)
    return text.rstrip() + "\n\n" + section + "\n"


def save(record: dict[str, Any]) -> Path:
    """Keep a run's record as bench/results/KEY.json and render its section into RESULTS.md."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{record['key']}.json"
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    render_into_results([path])
    return path


def render_into_results(paths: Sequence[Path] | None = None, results: Path = RESULTS) -> list[str]:
    """Render the records at `paths` (default: every bench/results/*.json) into their sections of
    `results`; returns the keys written."""
    chosen = sorted(RESULTS_DIR.glob("*.json")) if paths is None else list(paths)
    text = results.read_text(encoding="utf-8") if results.exists() else HEADER
    keys = []
    for path in chosen:
        record = json.loads(path.read_text(encoding="utf-8"))
        text = splice(text, record["key"], render(record))
        keys.append(str(record["key"]))
    results.write_text(text, encoding="utf-8")
    return keys
