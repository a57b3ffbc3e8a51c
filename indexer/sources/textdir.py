from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import SourceError
from ._records import Record, Skip, _is_unicode, record_from_fields
from ._template import Template


class TextDirSource:
    """Every regular file below a directory: id = its relative POSIX path, text = its UTF-8 content.

    Symbolic links are followed only when their target stays inside the directory; a link out of it is
    skipped with a warning, so a source can never read files it was not given. A link to a directory is
    not descended into (that could loop); it is skipped with a warning too. A directory below the root
    that cannot be listed stops the scan with a SourceError: its files would otherwise look deleted.
    """

    def __init__(self, root: Path, template: Template | None = None) -> None:
        unknown = [f for f in template.fields if f not in ("id", "text")] if template else []
        if unknown:
            raise SourceError(f"source {root} is a directory of text files, whose records have only the "
                              f"fields id (the relative path) and text; the --template asks for "
                              f"{', '.join(map(repr, unknown))}")
        self.template = template
        self.root = root
        self.name = str(root)
        self._real_root = root.resolve()
        try:
            with os.scandir(root):
                pass
        except OSError as exc:
            raise SourceError(f"source {root} cannot be read: {exc.strerror}; check its permissions") from exc

    def __iter__(self) -> Iterator[Record | Skip]:
        def refuse(exc: OSError) -> None:
            raise SourceError(
                f"{exc.filename} cannot be listed: {exc.strerror}; fix its permissions and sync again "
                "(files read before it were scanned, no document was deleted)") from exc

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=refuse):
            dirnames.sort()
            for dname in dirnames:
                link = Path(dirpath) / dname
                if link.is_symlink():
                    yield Skip(str(link), "symbolic link to a directory; not followed")
            for fname in sorted(filenames):
                path = Path(dirpath) / fname
                rel = path.relative_to(self.root).as_posix()
                where = str(path)
                if not _is_unicode(rel):
                    yield Skip(where, "file name is not valid UTF-8, so it cannot be an id; rename the file")
                    continue
                try:
                    real = path.resolve()
                except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before 3.13)
                    yield Skip(where, f"symbolic link cannot be resolved: {exc}")
                    continue
                if not real.is_relative_to(self._real_root):
                    yield Skip(where, f"symbolic link out of {self.root} to {real}; not followed", rel)
                    continue
                if not real.exists():
                    yield Skip(where, f"broken symbolic link to {real}")
                    continue
                if not real.is_file():
                    yield Skip(where, "not a regular file")
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
                yield record_from_fields({"id": rel, "text": text}, "id", "text", where,
                                         template=self.template)
