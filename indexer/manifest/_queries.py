"""Named SQL statements, kept in the `.sql` files of sql/ beside this module and looked up by name.

A file is a run of blocks, each opened by a `-- name: NAME` line (the idea of procrastinate's
sql/queries.sql). A block's other comment lines say why its statement is written so; the statement
is the rest of the block. A module loads its file once, when it is imported.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME_LINE = re.compile(r"^-- name: (\w+)[ \t]*$", re.MULTILINE)


def named_queries(filename: str) -> dict[str, str]:
    """NAME -> statement, for each block of sql/`filename`."""
    text = (resources.files("indexer.manifest") / "sql" / filename).read_text(encoding="utf-8")
    _, *blocks = _NAME_LINE.split(text)  # (the file's own comments come before the first name)
    queries: dict[str, str] = {}
    for name, block in zip(blocks[::2], blocks[1::2], strict=True):
        statement = "\n".join(line for line in block.splitlines()
                              if not line.lstrip().startswith("--")).strip()
        if not statement or name in queries:
            raise ValueError(f"sql/{filename}: the query {name!r} is empty or named twice")
        queries[name] = statement
    return queries
