"""Every SQL statement indexer runs is written in the manifest package (indexer/manifest/: its named
queries in sql/, and the statements composed from shared parts in its modules); the rest of indexer
asks the manifest's functions and never writes SQL itself. Nor do the tests: they read a manifest through
`Inspection` (indexer/manifest/); the few writes only a test makes (damage, older schemas' layouts) are
in one module, tests/manifest_surgery.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import indexer

PACKAGE = Path(indexer.__file__).parent
TESTS = Path(__file__).resolve().parents[1]
_STATEMENT = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|REPLACE|CREATE|DROP|ALTER|WITH|BEGIN|COMMIT|"
                        r"ROLLBACK|SAVEPOINT|RELEASE|PRAGMA|VACUUM|ATTACH)\b|^\s*(FROM|WHERE|JOIN) ")


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of each string literal, and of each literal part of an f-string."""
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_no_sql_outside_the_manifest_package() -> None:
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if (PACKAGE / "manifest") in module.parents:
            continue
        tree = ast.parse(module.read_text(encoding="utf-8"))
        found += [f"{module.relative_to(PACKAGE)}:{line}: {text.strip()[:60]!r}"
                  for line, text in _strings(tree) if _STATEMENT.match(text)]
    assert not found, "SQL outside indexer/manifest/:\n" + "\n".join(found)


def test_no_test_runs_sql_but_the_schema_surgery() -> None:
    # A statement run by hand: .execute, .executemany, .executescript (a subclass calling its base's, and
    # DuckDB reading an export, are not the manifest).
    statement = re.compile(r"(?<!super\(\))(?<!duckdb)\." r"execute(many|script)?\(")  # (not this line)
    running = [f"{path.relative_to(TESTS)}:{n}" for path in sorted(TESTS.rglob("*.py"))
               if path.name != "manifest_surgery.py"
               for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
               if statement.search(line)]
    assert running == []
