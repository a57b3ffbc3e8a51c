"""What the manifest hands out and takes back: content hashes, claims, finished claims, scan counts."""

from __future__ import annotations

from dataclasses import dataclass, field

import xxhash


def content_hash(text: str) -> bytes:
    """XXH3-128 of the UTF-8 text: the identity of a content."""
    return xxhash.xxh3_128_digest(text.encode("utf-8"))


@dataclass(frozen=True)
class Claim:
    id: int
    token: str
    chunk: int
    hashes: list[bytes]
    texts: list[str]
    seqs: list[int] = field(default_factory=list)  # the staged rows of the texts, ascending


@dataclass(frozen=True)
class Finished:
    """A claim whose chunk is written: its (hash, slot) pairs done, (hash, reason) failed attempts, and
    the chunk's checksums (None when nothing was written), ready for `Manifest.commit_many`."""

    claim: Claim
    done: list[tuple[bytes, int]]
    failed: list[tuple[bytes, str]]
    checksum: bytes | None


@dataclass
class ScanCounts:
    scanned: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    skipped: int = 0
    duplicates: int = 0
    to_embed: int = 0  # distinct contents that became pending (chunks of long documents)
    chunks: int = 0  # chunks of the new and changed documents (1 for a document that fits)
    truncated: int = 0  # new and changed documents cut at the model's window (an unchunked index)
    repeated: int = 0  # skips an earlier scan reported already (same place, same reason): not warned
    warnings: list[str] = field(default_factory=list)
    # Skips with a group (Skip.group, e.g. binary files): group -> [count, first place], one warning each.
    grouped: dict[str, tuple[int, str]] = field(default_factory=dict)

    def summary_warnings(self) -> list[str]:
        """One line for each group of skips and one for the skips reported by an earlier sync."""
        out = [f"skipped {n} {group}(s), e.g. {first}; leave them out with --exclude to silence this"
               for group, (n, first) in self.grouped.items()]
        if self.repeated:
            out.append(f"{self.repeated} more skipped record(s) were reported by an earlier sync and are "
                       "not repeated (a record is reported again when its place or reason changes)")
        return out
