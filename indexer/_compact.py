"""`Index.compact`'s packing: orphan chunks and unfinished files removed, sparse chunks' live rows
written to new chunks, the slots moved in one transaction, then the old chunks removed."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ._verify import check_chunk

if TYPE_CHECKING:
    from .index import Index


@dataclass
class CompactReport:
    contents_dropped: int = 0
    orphan_chunks_removed: int = 0
    partial_files_removed: int = 0
    chunks_packed: int = 0
    chunks_written: int = 0
    damaged_chunks_left: int = 0  # sparse chunks that fail verify: left for `verify --repair`
    manifest_bytes_freed: int = 0  # by VACUUM
    checksums_recorded: int = 0  # of chunks written before checksums were kept

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def compact(index: Index) -> CompactReport:
    """`Index.compact`'s packing, under the exclusive maintenance lock and after stale claims expired."""
    report = CompactReport()
    report.contents_dropped = index.manifest.drop_unreferenced_contents()
    for p in index.store.partial_files():
        p.unlink(missing_ok=True)
        report.partial_files_removed += 1
    rows_per_chunk = index.store.chunk_rows
    by_chunk: dict[int, list[int]] = defaultdict(list)
    for _, slot in index.manifest.done_slots():
        by_chunk[slot // rows_per_chunk].append(slot)
    active = index.manifest.active_chunks()
    orphans = [c for c in index.store.chunk_files() if c not in by_chunk and c not in active]
    for chunk in orphans:
        index.store.delete_chunk(chunk)
    index.manifest.forget_chunks(orphans)
    report.orphan_chunks_removed = len(orphans)
    checksums = index.manifest.chunk_checksums()
    sparse, adopted = [], {}
    for c, slots in sorted(by_chunk.items()):
        if len(slots) == rows_per_chunk and c in checksums:
            continue
        check = check_chunk(index.store, c, slots, checksums.get(c))
        if not check.sound:
            # Never copy a damaged chunk's rows into a new chunk with a fresh checksum, nor record
            # its bytes as right: it stays for `verify --repair`.
            report.damaged_chunks_left += 1
            continue
        if c not in checksums and check.actual is not None:
            adopted[c] = check.actual  # written before checksums were kept: sound, so recorded now
        if len(slots) < rows_per_chunk:
            sparse.append(c)
    if adopted:
        index.manifest.record_checksums(adopted)
        report.checksums_recorded = len(adopted)
    live = sorted(s for c in sparse for s in by_chunk[c])
    needed = -(-len(live) // rows_per_chunk)
    if needed >= len(sparse):
        return report
    moves: list[tuple[int, int]] = []
    written: dict[int, bytes] = {}
    for start in range(0, len(live), rows_per_chunk):
        group = live[start:start + rows_per_chunk]
        chunk = index.manifest.allocate_chunk(lambda c: index.store.ensure_chunks(c + 1))
        block = np.full((rows_per_chunk, index.store.dim), np.nan, dtype=index.store.dtype)
        block[:len(group)] = index.store.read_slots(group)
        written[chunk] = index.store.write_chunk(chunk, block)
        moves.extend((old, chunk * rows_per_chunk + i) for i, old in enumerate(group))
        report.chunks_written += 1
    index.manifest.move_slots(moves, written, sparse)
    for chunk in sparse:
        index.store.delete_chunk(chunk)
    report.chunks_packed = len(sparse)
    return report
