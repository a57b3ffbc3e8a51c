"""The benchmark cases, one module each: `python -m bench NAME` runs `bench.cases.NAME.main(argv)`. A
case's docstring says what it measures; its first line is the one `python -m bench` lists."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith("_"))


def summary(name: str) -> str:
    """The first line of a case's docstring, read without importing it."""
    doc = ast.get_docstring(ast.parse((HERE / f"{name}.py").read_text(encoding="utf-8"))) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def load(name: str) -> ModuleType:
    return importlib.import_module(f"{__name__}.{name}")
