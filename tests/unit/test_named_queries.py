"""The manifest's named queries (indexer/manifest/sql/): a file is read into its blocks, comments left
out of the statements, a name given twice refused; each module that loads a file looks up only names
the file has, and uses every query in it."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import pytest

import indexer.manifest
from indexer.manifest._queries import named_queries

PACKAGE = Path(indexer.manifest.__file__).parent


def test_blocks_are_read_by_name_without_their_comments(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "t.sql").write_text(
        "-- what this file holds\n\n-- name: first\n-- why it is so\nSELECT 1\n    FROM t\n\n"
        "-- name: second\nUPDATE t SET x = 1\n", encoding="utf-8")
    monkeypatch.setattr(importlib.resources, "files", lambda _: tmp_path)
    assert named_queries("t.sql") == {"first": "SELECT 1\n    FROM t", "second": "UPDATE t SET x = 1"}
    (tmp_path / "sql" / "t.sql").write_text("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="named twice"):
        named_queries("t.sql")


def test_every_name_looked_up_is_in_the_file_its_module_loads_and_every_query_is_used() -> None:
    used: dict[str, set[str]] = {}
    for module in PACKAGE.glob("*.py"):
        text = module.read_text(encoding="utf-8")
        for filename in re.findall(r'named_queries\("([\w.]+)"\)', text):
            used[filename] = set(re.findall(r'_QUERIES\["(\w+)"\]', text))
    assert set(used) == {path.name for path in (PACKAGE / "sql").glob("*.sql")}
    for filename, names in used.items():
        assert names == set(named_queries(filename)), filename

