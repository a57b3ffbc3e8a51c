"""The vector store: a chunked, uncompressed Zarr v3 array (slots, dim) in float32 or float16.

Each chunk holds `chunk_rows` slots and belongs to exactly one claim, so it has one writer and is written
whole, once: to a temporary file, fsynced, renamed over its key, and the directory fsynced, before the
manifest marks any of its rows done. The fill value is NaN, so a missing chunk can never pass for a
real vector. The array's shape (its high-water mark) only grows inside the manifest's write transaction.

Chunks are plain little-endian C-order bytes (the `bytes` codec alone), so readers memory-map them.
"""

from __future__ import annotations

import contextlib
import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import xxhash
import zarr

from ._signals import held_stop
from .errors import ChunkMissingError, StoreError

__all__ = ["VectorStore", "checksum"]

_NUMPY_DTYPES = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


def checksum(data: bytes | memoryview) -> bytes:
    """XXH3-64 of bytes: many times faster than the chunk's write (bench/RESULTS.md)."""
    return xxhash.xxh3_64_digest(data)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VectorStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._array = zarr.open_array(path, mode="r")
        except PermissionError as exc:
            raise StoreError(f"cannot read {path} ({exc.strerror or exc}); check that this user may read "
                             "it. Nothing was changed") from exc
        except (FileNotFoundError, ValueError, KeyError) as exc:
            raise StoreError(f"{path} is not a readable Zarr array ({exc}). Nothing was changed; restore "
                             "it from a backup") from exc
        self.chunk_rows, self.dim = (int(n) for n in self._array.chunks)
        self.dtype = np.dtype(self._array.dtype).newbyteorder("<")
        self.chunk_bytes = self.chunk_rows * self.dim * self.dtype.itemsize
        self._maps: OrderedDict[int, np.memmap] = OrderedDict()
        # Whole-chunk checksums recorded in the manifest (the readers fill this in): a chunk is checked
        # against its own the first time it is mapped, so that a chunk changed after it was written
        # (zeroed, bits flipped) is never served. A chunk number is written once: no entry goes stale.
        self.expected: dict[int, bytes] = {}
        self._checked: set[int] = set()
        self._rows_known = 0  # the array holds at least this many rows (set by ensure_chunks)

    @classmethod
    def create(cls, path: Path, dim: int, dtype: str, chunk_rows: int) -> VectorStore:
        if dtype not in _NUMPY_DTYPES:
            raise StoreError(f"dtype {dtype!r} is not supported; use float32 or float16")
        zarr.create_array(path, shape=(0, dim), chunks=(chunk_rows, dim), dtype=str(_NUMPY_DTYPES[dtype]),
                          fill_value=np.nan, compressors=None, filters=None, zarr_format=3)
        _fsync_dir(path)
        return cls(path)

    # -- layout ---------------------------------------------------------------------------------

    def chunk_path(self, chunk: int) -> Path:
        return self.path / "c" / str(chunk) / "0"  # the v3 default key encoding, "/" separator

    def rows(self) -> int:
        return int(zarr.open_array(self.path, mode="r").shape[0])

    def ensure_chunks(self, n_chunks: int, spare: int = 0) -> None:
        """Grow the array's shape to hold `n_chunks` chunks, and `spare` more when it has to grow (so
        that the next calls need not rewrite zarr.json). Call it under the manifest's write lock."""
        if n_chunks * self.chunk_rows <= self._rows_known:
            return  # the shape never shrinks: no need to read zarr.json again
        with held_stop():  # a SIGTERM mid-call is raised after it (zarr's calls are not to be cut)
            array = zarr.open_array(self.path, mode="r+")
            if array.shape[0] < n_chunks * self.chunk_rows:
                n_chunks += spare
                try:
                    array.resize((n_chunks * self.chunk_rows, self.dim))
                except OSError as exc:
                    raise StoreError(f"cannot grow {self.path} to {n_chunks} chunks: "
                                     f"{exc.strerror or exc}; free space or fix permissions, then sync "
                                     "again (nothing was claimed)") from exc
        self._rows_known = max(int(array.shape[0]), n_chunks * self.chunk_rows)

    def chunk_files(self) -> Iterator[int]:
        base = self.path / "c"
        if base.is_dir():
            for entry in os.scandir(base):
                if entry.name.isdigit():
                    yield int(entry.name)

    def partial_files(self) -> list[Path]:
        """Temporary files of writes that never finished (a crash between write and rename): ours under
        c/, and zarr's own beside zarr.json (it resizes the array through one)."""
        return sorted(self.path.rglob("*.partial")) if self.path.is_dir() else []

    # -- write ----------------------------------------------------------------------------------

    def write_chunk(self, chunk: int, block: np.ndarray) -> bytes:
        """Write one whole chunk durably. `block` has shape (chunk_rows, dim); unused rows are NaN.
        Returns the checksums of the bytes written (`checksums_of`), for the manifest."""
        if block.shape != (self.chunk_rows, self.dim):
            raise StoreError(f"chunk {chunk}: block of shape {block.shape}, expected "
                             f"{(self.chunk_rows, self.dim)}")
        data = np.ascontiguousarray(block, dtype=self.dtype).data.cast("B")
        final = self.chunk_path(chunk)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"0.{os.getpid()}.partial")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(final.parent)
            _fsync_dir(final.parent.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write chunk {chunk} to {final}: {exc.strerror or exc}; "
                             "free space or fix permissions, then sync again (nothing was marked done)"
                             ) from exc
        self._maps.pop(chunk, None)
        return self.checksums_of(data)

    def delete_chunk(self, chunk: int) -> None:
        path = self.chunk_path(chunk)
        self._maps.pop(chunk, None)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    # -- read -----------------------------------------------------------------------------------

    def chunk_state(self, chunk: int) -> str:
        """'ok', 'missing' or 'torn' (wrong size)."""
        try:
            size = self.chunk_path(chunk).stat().st_size
        except FileNotFoundError:
            return "missing"
        return "ok" if size == self.chunk_bytes else "torn"

    def checksums_of(self, data: bytes | memoryview) -> bytes:
        """What the manifest records for a chunk: the XXH3-64 of its bytes, then that of each of its
        rows (8 bytes each), so that `verify` can tell which rows of a changed chunk changed."""
        view = memoryview(data).cast("B")
        row_bytes = self.dim * self.dtype.itemsize
        return checksum(view) + b"".join(checksum(view[i:i + row_bytes])
                                         for i in range(0, len(view), row_bytes))

    def read_chunk_checked(self, chunk: int, recorded: bytes | None) -> tuple[np.ndarray, bytes, list[int]]:
        """The chunk's rows, read from its file once; the checksums of its bytes; and the rows whose
        checksum is not the `recorded` one (all of them when the record does not fit: never silent)."""
        data = self.chunk_path(chunk).read_bytes()
        if len(data) != self.chunk_bytes:
            raise ChunkMissingError(f"chunk {chunk} of {self.path} is torn", chunk)
        rows = np.frombuffer(data, dtype=self.dtype).reshape(self.chunk_rows, self.dim)
        actual = self.checksums_of(data)
        changed: list[int] = []
        if recorded is not None and recorded[:8] != actual[:8]:
            if len(recorded) != len(actual):
                changed = list(range(self.chunk_rows))
            else:
                changed = [r for r in range(self.chunk_rows)
                           if recorded[8 + 8 * r:16 + 8 * r] != actual[8 + 8 * r:16 + 8 * r]]
        return rows, actual, changed

    def _map(self, chunk: int) -> np.ndarray:
        m = self._maps.get(chunk)
        if m is None:
            state = self.chunk_state(chunk)
            if state != "ok":
                raise ChunkMissingError(f"chunk {chunk} of {self.path} is {state}; run `indexer verify "
                                        f"{self.path.parent} --repair` to re-queue its documents", chunk)
            m = np.memmap(self.chunk_path(chunk), dtype=self.dtype, mode="r",
                          shape=(self.chunk_rows, self.dim))
            if chunk not in self._checked and chunk in self.expected:
                if checksum(m.data) != self.expected[chunk][:8]:
                    raise StoreError(f"chunk {chunk} of {self.path} does not match its checksum (it changed "
                                     f"after it was written); run `indexer verify {self.path.parent} "
                                     "--repair`, then sync the same sources again")
                self._checked.add(chunk)
            self._maps[chunk] = m
            if len(self._maps) > 256:  # bound the open file descriptors
                self._maps.popitem(last=False)
        else:
            self._maps.move_to_end(chunk)
        return m

    def read_chunk(self, chunk: int) -> np.ndarray:
        return self._map(chunk)

    def read_slots(self, slots: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Gather rows by slot, in the order given, chunk by chunk."""
        slots = np.asarray(slots, dtype=np.int64)
        if out is None:
            out = np.empty((len(slots), self.dim), dtype=self.dtype)
        if len(slots) == 0:
            return out
        chunks = slots // self.chunk_rows
        order = np.argsort(chunks, kind="stable")
        sorted_chunks = chunks[order]
        bounds = np.flatnonzero(np.diff(sorted_chunks)) + 1
        for part in np.split(order, bounds):
            chunk = int(chunks[part[0]])
            rows = slots[part] - chunk * self.chunk_rows
            # part is ascending (stable sort): consecutive slots into consecutive rows of `out`, as in
            # a read in slot order, are one slice copy instead of a gather
            if int(part[-1]) - int(part[0]) == len(part) - 1 and (np.diff(rows) == 1).all():
                out[int(part[0]):int(part[-1]) + 1] = self._map(chunk)[int(rows[0]):int(rows[-1]) + 1]
            else:
                out[part] = self._map(chunk)[rows]
        return out
