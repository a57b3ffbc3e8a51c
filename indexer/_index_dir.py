"""The files of an index directory (manifest.sqlite, vectors.zarr, index.toml) as `Index.create` and
`Index.open` find them: the lock held while an index is made, the refusal of files that are not an
index's, index.toml recovered from the manifest's copy, a store that a creation left unfinished made or
removed; and the filesystem the directory is on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .config import EmbeddingConfig, config_text, parse_config, write_config
from .errors import IndexNotFoundError, ManifestError, StoreError
from .manifest import Manifest
from .settings import Settings
from .store import VectorStore

MANIFEST, STORE, CONFIG = "manifest.sqlite", "vectors.zarr", "index.toml"
_NETWORK_FILESYSTEMS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "9p", "afs", "glusterfs",
                        "ceph", "fuse.s3fs", "fuse.gcsfuse", "lustre"}


def network_filesystem(path: Path) -> str | None:
    """The type of the network filesystem holding `path`, or None (a local one, or unknown)."""
    fstype = filesystem_type(path)
    return fstype if fstype in _NETWORK_FILESYSTEMS else None


def filesystem_type(path: Path) -> str | None:
    """The type of the mount holding `path`, from /proc/mounts (Linux); None where unknown."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    real, best, fstype = str(path.resolve()), "", None
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


@contextlib.contextmanager
def creation_lock(path: Path) -> Iterator[None]:
    """Held while an index is made or its creation finished (flock on the index directory)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def not_an_index(path: Path, why: str) -> IndexNotFoundError:
    return IndexNotFoundError(f"{path} is not an index: its {MANIFEST} is not an indexer manifest ({why}). "
                              "Nothing was changed; point --index at another directory")


def store_without_manifest(path: Path) -> IndexNotFoundError:
    return IndexNotFoundError(f"{path} is not an index: it holds a {STORE} but no {MANIFEST}. Nothing was "
                              "changed; point --index at another directory (or restore the manifest of "
                              "the index it belongs to)")


def remove_unfinished_store(store: Path) -> None:
    """A store made by a creation that stopped before the end: removed, but only if it holds no chunk."""
    if (store / "c").exists() and any((store / "c").iterdir()):
        raise StoreError(f"{store} holds chunk files but its manifest holds nothing: it is not this "
                         "index's. Nothing was changed; move it away or point --index elsewhere")
    shutil.rmtree(store)


def load_config(path: Path, manifest: Manifest) -> EmbeddingConfig:
    """The configuration from index.toml; where that is missing, empty or unreadable, from the copy in
    the manifest (written back to index.toml, atomically, unless read-only)."""
    toml = path / CONFIG
    try:
        text = toml.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read {toml} ({exc}); check its permissions. Nothing was changed"
                            ) from exc
    copy = manifest.stored_config()
    problem = "is missing or empty"
    if text.strip():
        try:
            config = parse_config(text, str(toml))
        except ValueError as exc:
            problem = f"is unreadable ({exc})"
        else:
            if copy is None and not manifest.read_only:  # an index made before the copy was kept
                manifest.store_config(config_text(config))
            return config
    if copy is None:
        if not text and manifest.is_blank():
            raise IndexNotFoundError(f"the creation of the index at {path} stopped before its end (an older "
                                     "indexer) and nothing was stored in it: remove the directory, then "
                                     "sync again")
        raise ManifestError(f"{toml} {problem}, and this manifest (made by an older indexer) holds no copy "
                            f"of it: restore {toml} from a backup. Nothing was changed")
    config = parse_config(copy, f"the copy of {CONFIG} in {manifest.path}")
    if not manifest.read_only:
        with creation_lock(path):
            write_config(toml, config)
    return config


def load_store(path: Path, config: EmbeddingConfig, manifest: Manifest, settings: Settings) -> VectorStore:
    """The store; made where a creation stopped before it (nothing stored yet), unless read-only."""
    try:
        return VectorStore(path / STORE)
    except StoreError:
        if manifest.read_only or not manifest.is_blank():
            raise
    with creation_lock(path):
        with contextlib.suppress(StoreError):  # another process finished it meanwhile
            return VectorStore(path / STORE)
        if (path / STORE).exists():
            remove_unfinished_store(path / STORE)
        return VectorStore.create(path / STORE, config.dim, config.dtype, settings.chunk_rows)
