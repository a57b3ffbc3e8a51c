from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ._records import Record, Skip, record_from_fields


class TextDirSource:
    """Every regular file below a directory: id = its relative POSIX path, text = its UTF-8 content.

    Symbolic links are followed only when their target stays inside the directory; a link out of it is
    skipped with a warning, so a source can never read files it was not given.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = str(root)
        self._real_root = root.resolve()

    def __iter__(self) -> Iterator[Record | Skip]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                rel = path.relative_to(self.root).as_posix()
                where = str(path)
                real = path.resolve()
                if not real.is_relative_to(self._real_root):
                    yield Skip(where, f"symbolic link out of {self.root} to {real}; not followed", rel)
                    continue
                if not real.is_file():
                    continue
                try:
                    data = real.read_bytes()
                except OSError as exc:
                    yield Skip(where, f"cannot be read: {exc.strerror}", rel)
                    continue
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    yield Skip(where, f"not valid UTF-8 at byte {exc.start}", rel)
                    continue
                yield record_from_fields({"id": rel, "text": text}, "id", "text", where)
