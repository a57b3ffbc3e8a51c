from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import SourceError
from ._records import Record, Skip, _is_unicode, record_from_fields
from ._template import Template

__all__ = ["BINARY", "TEXT_FILE_SUFFIXES", "FolderFilter", "TextDirSource", "TextFileSource"]

# A single file with one of these suffixes is one document (id = its file name).
TEXT_FILE_SUFFIXES = (".txt", ".md", ".rst")
# The Skip group of binary files: counted, and reported in one warning per sync rather than one each.
BINARY = "binary file"
# A file that is not UTF-8 and has a NUL byte in its first 8 KiB (git's test) is binary. (Valid UTF-8
# with NUL bytes stays text: the NUL is part of the document.)
_BINARY_SNIFF = 8192


@dataclass(frozen=True)
class FolderFilter:
    """Which files of a directory source are documents.

    `include` / `exclude`: gitignore-style patterns matched against the path relative to the directory
    (`*.md` at any depth, `docs/` a directory, `/top.txt` anchored, `**` any depth). With includes, a
    file must match one; a file (or directory) that matches an exclude is left out. Hidden files and
    directories (a name starting with ".") are left out unless `hidden`; `.git/` always is, and so is
    any directory in `skip_dirs` (the index's own directory when it lies inside the source)."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    hidden: bool = False
    skip_dirs: Sequence[Path] = ()


def _spec(patterns: Sequence[str]) -> object | None:
    if not patterns:
        return None
    import pathspec

    return pathspec.GitIgnoreSpec.from_lines(list(patterns))


def _matches(spec: object | None, rel: str) -> bool:
    return spec is not None and bool(spec.match_file(rel))  # type: ignore[attr-defined]


class TextDirSource:
    """Every regular text file below a directory: id = its relative POSIX path, text = its UTF-8 content.

    `FolderFilter` picks the files (hidden files, `.git/` and the index's own directory are left out by
    default). A binary file (not UTF-8, NUL bytes near its start) is skipped and counted under the group
    BINARY.
    Symbolic links are followed only when their target stays inside the directory; a link out of it is
    skipped with a warning, so a source can never read files it was not given. A link to a directory is
    not descended into (that could loop); it is skipped with a warning too. A directory below the root
    that cannot be listed stops the scan with a SourceError: its files would otherwise look deleted.
    """

    def __init__(self, root: Path, template: Template | None = None,
                 folder: FolderFilter | None = None) -> None:
        self.template = _only_id_and_text(template, root)
        self.root = root
        self.name = str(root)
        self._real_root = root.resolve()
        self.folder = folder or FolderFilter()
        self._include = _spec(self.folder.include)
        self._exclude = _spec(self.folder.exclude)
        self._skip_real = {Path(d).resolve() for d in self.folder.skip_dirs}
        try:
            with os.scandir(root):
                pass
        except OSError as exc:
            raise SourceError(f"source {root} cannot be read: {exc.strerror}; check its permissions") from exc

    def _descend(self, dirpath: str, dname: str) -> bool:
        """Whether to walk into the directory `dname` of `dirpath`."""
        if dname == ".git" or (dname.startswith(".") and not self.folder.hidden):
            return False
        path = Path(dirpath) / dname
        if self._skip_real and path.resolve() in self._skip_real:
            return False
        return not _matches(self._exclude, path.relative_to(self.root).as_posix() + "/")

    def _wanted(self, fname: str, rel: str) -> bool:
        if fname.startswith(".") and not self.folder.hidden:
            return False
        if self._include is not None and not _matches(self._include, rel):
            return False
        return not _matches(self._exclude, rel)

    def __iter__(self) -> Iterator[Record | Skip]:
        def refuse(exc: OSError) -> None:
            raise SourceError(
                f"{exc.filename} cannot be listed: {exc.strerror}; fix its permissions and sync again "
                "(files read before it were scanned, no document was deleted)") from exc

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=refuse):
            dirnames[:] = sorted(d for d in dirnames if self._descend(dirpath, d))
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
                if not self._wanted(fname, rel):
                    continue
                yield from _read_text_file(path, rel, where, self._real_root, self.template)


def _only_id_and_text(template: Template | None, source: Path) -> Template | None:
    """A text file's record has the fields id and text alone: a template asking for more is refused."""
    unknown = [f for f in template.fields if f not in ("id", "text")] if template else []
    if unknown:
        raise SourceError(f"source {source} is text files, whose records have only the fields id (the "
                          f"file's path) and text; the --template asks for {', '.join(map(repr, unknown))}")
    return template


def _read_text_file(path: Path, doc_id: str, where: str, within: Path | None,
                    template: Template | None) -> Iterator[Record | Skip]:
    """The file at `path` as one document `doc_id`, or the Skip that says why not. Links are followed
    only to a target inside `within` (when given)."""
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop (RuntimeError before 3.13)
        yield Skip(where, f"symbolic link cannot be resolved: {exc}")
        return
    if within is not None and not real.is_relative_to(within):
        yield Skip(where, f"symbolic link out of {within} to {real}; not followed", doc_id)
        return
    if not real.exists():
        yield Skip(where, f"broken symbolic link to {real}")
        return
    if not real.is_file():
        yield Skip(where, "not a regular file")
        return
    try:
        data = real.read_bytes()
    except OSError as exc:
        yield Skip(where, f"cannot be read: {exc.strerror}", doc_id)
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if b"\x00" in data[:_BINARY_SNIFF]:  # not text at all: one warning for all of them
            yield Skip(where, "binary file (not UTF-8, NUL bytes near its start)", doc_id, group=BINARY)
        else:  # text in another encoding, likely: worth a warning of its own
            yield Skip(where, f"not valid UTF-8 at byte {exc.start}", doc_id)
        return
    yield record_from_fields({"id": doc_id, "text": text}, "id", "text", where, template=template)


class TextFileSource:
    """One text file (.txt, .md, .rst) as one document: id = the file's name, text = its UTF-8 content."""

    def __init__(self, path: Path, template: Template | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.template = _only_id_and_text(template, path)

    def __iter__(self) -> Iterator[Record | Skip]:
        yield from _read_text_file(self.path, self.path.name, self.name, None, self.template)
