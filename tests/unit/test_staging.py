"""Staged texts go into the manifest and come back to a claim whole: a NUL, characters of several
UTF-8 bytes, an empty text, whatever the statement that stages them (indexer/manifest/_staging.py stages a
batch's texts as one blob, several statements where the texts are larger than one may hold)."""

from __future__ import annotations

from pathlib import Path

import pytest

from indexer.manifest import Manifest, _staging, content_hash
from indexer.settings import Settings

TEXTS = ["a\x00b", "", "ü" * 7, "plain text", "\x00", "日本語のテキスト", "x" * 40, "tail"]


@pytest.mark.parametrize("limit", [2**31, 12, 1])
def test_staged_texts_come_back_to_a_claim_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 limit: int) -> None:
    monkeypatch.setattr(_staging, "_SPAN_LIMIT", limit)  # 12: several statements; 1: each text alone
    manifest = Manifest(tmp_path / "manifest.sqlite", Settings(), create=True)
    rows = [(content_hash(t), len(t), t, 0) for t in TEXTS]
    with manifest._write() as conn:
        added, found = _staging.stage_texts(conn, rows + rows[:2])  # the repeated ones are known
    assert added == len(TEXTS)
    claim = manifest.claim(100)
    assert claim is not None
    # Shortest first, then by hash; each text beside its own hash and number.
    assert sorted(claim.texts) == sorted(TEXTS)
    assert claim.hashes == [content_hash(t) for t in claim.texts]
    assert claim.seqs == [found[h][0] for h in claim.hashes] == sorted(claim.seqs)
    assert [len(t) for t in claim.texts] == sorted(len(t) for t in TEXTS)
    manifest.close()
