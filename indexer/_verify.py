"""`Index.verify`: manifest and store checked against each other, chunk by chunk (`check_chunk`, which
`compact` uses too); with repair, what is lost or damaged is re-queued."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ._index_dir import CONFIG
from .config import read_config
from .errors import ChunkMissingError
from .store import VectorStore

if TYPE_CHECKING:
    from .index import Index


@dataclass
class VerifyReport:
    ok: bool = True
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # not wrong, but reclaimable by compact
    repaired: int = 0

    def problem(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)

    def to_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "checked": self.checked, "problems": self.problems,
                "notes": self.notes, "repaired": self.repaired}


@dataclass
class ChunkCheck:
    """What `Index.verify` found in one chunk file that holds done vectors."""

    lost: str | list[int]  # why the whole chunk is lost (missing, torn); or the done slots not finite
    changed: list[int] = field(default_factory=list)  # done slots whose row checksum differs
    actual: bytes | None = None  # the checksums of the file as it is

    @property
    def sound(self) -> bool:
        return not self.lost and not self.changed


def verify(index: Index, repair: bool) -> VerifyReport:
    """`Index.verify`, under the maintenance lock."""
    report = VerifyReport()
    integrity = index.manifest.integrity_check()
    if integrity != "ok":
        report.problem(f"manifest integrity check: {integrity}")
    try:
        on_disk = read_config(index.path / CONFIG)
        if on_disk != index.config:
            report.problem(f"{CONFIG} changed while open: " + "; ".join(index.config.differences(on_disk)))
    except Exception as exc:
        report.problem(str(exc))
    bad: list[bytes] = []
    by_chunk: dict[int, list[tuple[bytes, int]]] = defaultdict(list)
    done, active = index.manifest.done_slots_and_active_chunks()
    for h, slot in done:
        if slot is None:
            report.problem(f"content {h.hex()} is done without a slot")
            bad.append(h)
            continue
        by_chunk[slot // index.store.chunk_rows].append((h, slot))
    checksums = index.manifest.chunk_checksums()
    unrecorded: dict[int, bytes] = {}  # chunks written before checksums were kept, found sound
    for chunk, rows in sorted(by_chunk.items()):
        report.checked += len(rows)
        check = check_chunk(index.store, chunk, [s for _, s in rows], checksums.get(chunk))
        if isinstance(check.lost, str):
            report.problem(check.lost)
            bad.extend(h for h, _ in rows)
            continue
        hash_of = dict((s, h) for h, s in rows)
        for slot in check.lost:
            report.problem(f"slot {slot} (content {hash_of[slot].hex()}) is done but its vector is "
                           "not finite")
        if check.changed:
            report.problem(f"chunk {chunk} does not match its checksum: {len(check.changed)} done "
                           "vector(s) changed after they were written")
        damaged = set(check.lost) | set(check.changed)
        bad.extend(h for h, s in rows if s in damaged)
        if check.actual is not None and ((chunk not in checksums and check.sound) or damaged):
            # A chunk from before checksums; or one whose damaged rows --repair re-queues: the
            # rows it goes on serving match their own recorded checksums, so the file as it is
            # is their new record, and readers can map it again.
            unrecorded[chunk] = check.actual
    miscounted = index.manifest.counts_problems()
    for problem in miscounted:
        report.problem(problem)
    if repair and miscounted:
        index.manifest.recount()
        report.notes.append("recounted the status counts from the rows")
    for whole, what in index.manifest.broken_wholes():
        report.problem(f"long document content {whole.hex()} is done but {what}")
        bad.append(whole)
    old_chunks = sum(1 for c in unrecorded if c not in checksums)
    if old_chunks and not repair:
        report.notes.append(f"{old_chunks} chunk(s) were written before checksums were kept: "
                            "checked for missing values only; `indexer compact` or `indexer verify "
                            "--repair` records their checksums")
    referenced = set(by_chunk) | active
    orphans = [c for c in index.store.chunk_files() if c not in referenced]
    if orphans:
        report.notes.append(f"{len(orphans)} chunk file(s) hold no done vector; `indexer compact` "
                            "removes them")
    partials = index.store.partial_files()
    if partials:
        report.notes.append(f"{len(partials)} unfinished .partial file(s); "
                            "`indexer compact` removes them")
    if repair and bad:
        report.repaired = index.manifest.requeue(bad, "re-queued by verify --repair")
    if repair and unrecorded:
        index.manifest.record_checksums(unrecorded)
        if old_chunks:
            report.notes.append(f"recorded the checksums of {old_chunks} chunk(s) written before "
                                "checksums were kept")
    return report


def check_chunk(store: VectorStore, chunk: int, slots: Sequence[int], recorded: bytes | None) -> ChunkCheck:
    """Check a chunk that holds done `slots` against its `recorded` checksums (None: not kept)."""
    try:
        data, actual, changed_rows = store.read_chunk_checked(chunk, recorded)
    except FileNotFoundError:
        return ChunkCheck(f"chunk {chunk} is missing: {len(slots)} done vector(s) lost")
    except ChunkMissingError:
        return ChunkCheck(f"chunk {chunk} is torn: {len(slots)} done vector(s) lost")
    first = chunk * store.chunk_rows
    finite = np.isfinite(data[np.asarray(slots, dtype=np.int64) - first]).all(axis=1)
    not_finite = [int(s) for s, ok in zip(slots, finite, strict=True) if not ok]
    changed = sorted({first + r for r in changed_rows} & set(slots) - set(not_finite))
    return ChunkCheck(not_finite, changed, actual)
