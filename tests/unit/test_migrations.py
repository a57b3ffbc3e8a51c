"""Manifest schema migrations.

- A fresh manifest (migrations/schema.sql) has the same schema as one migrated step by step, each numbered
  migration applied to the database of the step before it, reopened in between.
- Each migration runs in one transaction with its ledger row: a failing migration leaves no part of its
  schema and no ledger row, and the manifest opens once the migration is fixed.
- A manifest with a schema version this indexer does not know is refused with ManifestError.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import indexer
from indexer.errors import ManifestError
from indexer.manifest import Inspection, Manifest, ScanCounts, _migrations, content_hash, migrations_dir
from indexer.settings import Settings
from indexer.sources import Record

from manifest_surgery import (
    Tamper,
    add_document_at_schema_1,
    add_rows_before_staged_texts,
    add_rows_before_state_counts,
    apply_by_hand,
    index_with_work_at_schema,
    rewind_before_served_once_done,
)

SETTINGS = Settings(chunk_rows=8)


def numbered() -> list[Path]:
    files = sorted(migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.sql"))
    assert files, f"no numbered migrations in {migrations_dir()}"
    return files


def schema_of(db: Path) -> list[tuple[str, str, str]]:
    m = Manifest(db, SETTINGS)
    try:
        return m.schema()
    finally:
        m.close()


def ledger(db: Path) -> list[tuple[int, str]]:
    with Inspection.open(db) as look:
        return [(version, name) for version, name, _ in look.migrations()]


def fresh(db: Path) -> Path:
    Manifest(db, SETTINGS, create=True).close()
    return db


def test_the_migrations_are_numbered_without_gaps() -> None:
    versions = [int(f.name[:4]) for f in numbered()]
    assert versions == list(range(1, len(versions) + 1))
    assert (migrations_dir() / "schema.sql").is_file()


def test_fresh_schema_equals_step_by_step_migrations(tmp_path: Path) -> None:
    new = fresh(tmp_path / "fresh.sqlite")
    stepwise = tmp_path / "stepwise.sqlite"
    apply_by_hand(stepwise, numbered())
    assert schema_of(stepwise) == schema_of(new)
    # the seed rows too, and both ledgers list every migration
    with Inspection.open(stepwise) as a, Inspection.open(new) as b:
        assert a.meta() == b.meta()
    expected = [(int(f.name[:4]), f.stem) for f in numbered()]
    assert ledger(stepwise) == ledger(new) == expected


def test_manifest_upgrades_an_old_database_step_by_step(tmp_path: Path) -> None:
    """A database that only had the first migration, opened by this indexer, gets the rest; its data
    survives and the result equals a fresh manifest."""
    old = tmp_path / "old.sqlite"
    apply_by_hand(old, numbered()[:1])
    add_document_at_schema_1(old)
    assert ledger(old) == [(1, numbered()[0].stem)]

    upgraded = schema_of(old)  # opening it runs 0002 ... N
    assert upgraded == schema_of(fresh(tmp_path / "fresh.sqlite"))
    assert ledger(old) == [(int(f.name[:4]), f.stem) for f in numbered()]
    with Inspection.open(old) as look:
        (seq,) = [c.seq for c in look.contents().values()]
        documents = {i: (d.hash, d.ready_hash, d.deleted, d.seq) for i, d in look.documents().items()}
        assert documents == {"doc": (b"\x00", None, 0, seq)}  # seq: its content's (0010)
        # reopening applies nothing twice
        before = look.migrations()
    schema_of(old)
    with Inspection.open(old) as look:
        assert look.migrations() == before


def test_schema_sql_matches_a_migrated_index_end_to_end(tmp_path: Path, fake_embedder: object) -> None:
    """An index made by a sync (schema.sql) and a step-by-step manifest have the same schema."""
    indexer.sync(tmp_path / "ix", [("a", "alpha")], embedder=fake_embedder,  # type: ignore[arg-type]
                 settings=SETTINGS)
    stepwise = tmp_path / "stepwise.sqlite"
    apply_by_hand(stepwise, numbered())
    assert schema_of(tmp_path / "ix" / "manifest.sqlite") == schema_of(stepwise)


@pytest.fixture
def patched_migrations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of migrations/ that the manifest reads instead of the real one; tests add files to it."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    monkeypatch.setattr(_migrations, "migrations_dir", lambda: copy)
    return copy


def test_a_failing_migration_leaves_no_partial_schema_and_no_ledger_row(
        tmp_path: Path, patched_migrations: Path) -> None:
    db = fresh(tmp_path / "m.sqlite")
    before_schema, before_ledger = schema_of(db), ledger(db)
    version = int(numbered()[-1].name[:4]) + 1  # the next after the last
    bad = patched_migrations / f"{version:04d}_bad.sql"
    # creates a table and an index, alters another table, then fails on its last statement
    bad.write_text("CREATE TABLE half_done (x INTEGER);\n"
                   "CREATE INDEX half_done_x ON half_done (x);\n"
                   "ALTER TABLE documents ADD COLUMN extra TEXT;\n"
                   "INSERT INTO no_such_table VALUES (1);\n", encoding="utf-8")
    with pytest.raises(ManifestError, match="no_such_table"):
        Manifest(db, SETTINGS)

    with Inspection.open(db) as look:
        names = {o.name for o in look.schema_objects()}
        columns = set(look.columns("documents"))
    assert "half_done" not in names and "half_done_x" not in names
    assert "extra" not in columns
    assert ledger(db) == before_ledger

    # fixed, the same migration applies, with its ledger row
    bad.write_text("CREATE TABLE half_done (x INTEGER);\n"
                   "ALTER TABLE documents ADD COLUMN extra TEXT;\n", encoding="utf-8")
    after = schema_of(db)
    assert after != before_schema
    assert any(name == "half_done" for _, name, _ in after)
    assert ledger(db) == [*before_ledger, (version, bad.stem)]


def test_a_migration_that_fails_on_its_first_statement_leaves_no_ledger_row(
        tmp_path: Path, patched_migrations: Path) -> None:
    db = fresh(tmp_path / "m.sqlite")
    before = ledger(db)
    version = int(numbered()[-1].name[:4]) + 1  # the next after the last
    (patched_migrations / f"{version:04d}_broken.sql").write_text("THIS IS NOT SQL;\n", encoding="utf-8")
    with pytest.raises(ManifestError):
        Manifest(db, SETTINGS)
    assert ledger(db) == before


def test_a_newer_schema_version_is_refused(tmp_path: Path) -> None:
    db = fresh(tmp_path / "m.sqlite")
    newer = len(numbered()) + 7
    with Tamper.open(db) as tamper:
        tamper.record_future_migration(newer)
    with Inspection.open(db) as look:
        schema_before = [o.sql for o in look.schema_objects()]
    with pytest.raises(ManifestError, match=f"newer indexer.*{newer}"):
        Manifest(db, SETTINGS)
    with Inspection.open(db) as look:
        assert [o.sql for o in look.schema_objects()] == schema_before


def test_a_newer_schema_version_is_refused_by_index_open(tmp_path: Path, fake_embedder: object) -> None:
    ix = tmp_path / "ix"
    indexer.sync(ix, [("a", "alpha")], embedder=fake_embedder, settings=SETTINGS)  # type: ignore[arg-type]
    with Tamper.open(ix) as tamper:
        tamper.record_future_migration(9999)
    with pytest.raises(ManifestError, match="upgrade indexer"):
        indexer.open(ix)


@pytest.mark.parametrize("version", [2, 3])
def test_an_index_from_before_0003_with_staged_and_claimed_work_syncs_to_the_end(
        tmp_path: Path, fake_embedder: object, version: int) -> None:
    """0003 rebuilds `contents`; 0004 adds chunk checksums, the copy of index.toml and the
    application_id. An index last written by the 0002 or the 0003 schema, with a done content, a
    pending one whose text is staged, one claimed by a dead worker and a failed one, opens, migrates,
    and a sync that reads no source finishes the staged and the claimed work from the texts the
    manifest kept. Its old chunks have no checksum: verify is clean and says so, `verify --repair`
    records them; the manifest now holds the copy of index.toml and says it is indexer's."""
    from indexer.manifest import APPLICATION_ID, identify

    from helpers import fake_vector, served

    ix = index_with_work_at_schema(tmp_path, fake_embedder, version, SETTINGS, failed=True)
    assert identify(ix / "manifest.sqlite")[0] == "ours"  # recognised by its tables before 0004
    summary = indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.embedded == 2
    got = served(ix)
    assert sorted(got) == ["a", "b", "c"]
    for key, text in (("a", "alpha"), ("b", "beta"), ("c", "gamma")):
        assert got[key].tobytes() == fake_vector(text).tobytes(), key
    assert ledger(ix / "manifest.sqlite") == [(int(f.name[:4]), f.stem) for f in numbered()]
    assert schema_of(ix / "manifest.sqlite") == schema_of(fresh(tmp_path / "fresh.sqlite"))
    with indexer.open(ix) as idx:
        assert idx.status()["failed"] == 1
        report = idx.verify()
        assert report.ok and any("written before checksums were kept" in n for n in report.notes), report
        assert idx.verify(repair=True).repaired == 0
        assert idx.verify().notes == []
        assert idx.manifest.stored_config() == (ix / "index.toml").read_text()
    with Inspection.open(ix) as look:
        assert look.application_id() == APPLICATION_ID


def test_an_index_from_before_0005_with_work_in_every_state_migrates_and_syncs(
        tmp_path: Path, fake_embedder: object) -> None:
    """0005 (long documents in chunks) adds columns and a table: an index last written by the 0003
    schema, with a done, a staged pending, a claimed (dead worker) and a failed content, opens, migrates
    (every old content is a plain one: parts 0), keeps serving what it served, and a sync finishes the
    rest; `retry` re-queues the failure; the schema is a fresh one's."""
    from helpers import fake_vector, served

    ix = index_with_work_at_schema(tmp_path, fake_embedder, 3, SETTINGS, [
        ("b", "beta", "pending"), ("c", "gamma", "claimed"), ("d", "bad", "failed")])
    with indexer.open(ix) as idx:  # migrates
        assert idx.status()["failed"] == 1 and idx.status()["chunks"] == 4
        assert [c for c in Inspection(idx.manifest.conn).contents().values() if c.parts != 0] == []
        assert list(idx.vectors()[0]) == ["a"]
        assert idx.retry() == 1
    summary = indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.embedded == 3
    got = served(ix)
    assert sorted(got) == ["a", "b", "c", "d"]
    for key, text in (("a", "alpha"), ("b", "beta"), ("c", "gamma"), ("d", "bad")):
        assert got[key].tobytes() == fake_vector(text).tobytes(), key
    assert ledger(ix / "manifest.sqlite") == [(int(f.name[:4]), f.stem) for f in numbered()]
    assert schema_of(ix / "manifest.sqlite") == schema_of(fresh(tmp_path / "fresh.sqlite"))
    with indexer.open(ix) as idx:
        assert idx.verify().to_dict()["problems"] == []


def test_an_index_from_before_push_state_migrates_syncs_and_pushes(tmp_path: Path,
                                                                   fake_embedder: object) -> None:
    """0006 adds the push tables: an index last written by the schema before it, with work in every
    state, migrates, syncs to the end and pushes."""
    pytest.importorskip("lancedb")
    from indexer.push import push

    from helpers import served

    ix = index_with_work_at_schema(tmp_path, fake_embedder, 5, SETTINGS)
    assert indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS).embedded == 2  # type: ignore[arg-type]
    assert ledger(ix / "manifest.sqlite") == [(int(f.name[:4]), f.stem) for f in numbered()]
    report = push(ix, f"lancedb:{tmp_path / 'lance'}")
    assert (report.upserted, report.rows) == (3, 3)
    assert sorted(served(ix)) == ["a", "b", "c"]


def test_an_index_from_before_the_skips_table_migrates_and_remembers_skips_from_then_on(
        tmp_path: Path, fake_embedder: object) -> None:
    """The skips migration adds `skips`: an index last written by the schema before it, with work in
    every state, migrates, syncs to the end, warns about a skipped record on its first sync after the
    upgrade and not on the next."""
    from helpers import write_jsonl

    skips_version = next(int(f.name[:4]) for f in numbered() if f.stem.endswith("_skips"))
    ix = index_with_work_at_schema(tmp_path, fake_embedder, skips_version - 1, SETTINGS)
    src = write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "alpha"}, {"id": "e", "text": " "},
                                             {"id": "b", "text": "beta"}, {"id": "c", "text": "gamma"}])
    first = indexer.sync(ix, paths=[str(src)], model="fake:16", settings=SETTINGS)
    assert first.warnings == [f"{src}:2: skipped: empty text: nothing to embed"] and first.embedded == 2
    assert ledger(ix / "manifest.sqlite") == [(int(f.name[:4]), f.stem) for f in numbered()]
    second = indexer.sync(ix, paths=[str(src)], model="fake:16", settings=SETTINGS)
    assert second.skipped == 1 and len(second.warnings) == 1
    assert "reported by an earlier sync" in second.warnings[0]


def test_an_index_from_before_state_counts_migrates_with_counts_equal_to_a_recount(
        tmp_path: Path, fake_embedder: object) -> None:
    """0008 keeps the status counts in `state_counts` (triggers) and fills them from the rows: an index
    last written by the schema before it, with work in every state, a document sharing another's
    content, a deleted one, a truncated one and a long document in chunks, migrates with counts equal
    to a recount from its rows (and to the figures below, counted by hand); they stay equal through a
    sync to the end, a delete and a compact."""
    from helpers import served

    counts_version = next(int(f.name[:4]) for f in numbered() if f.stem.endswith("_state_counts"))
    ix = index_with_work_at_schema(tmp_path, fake_embedder, counts_version - 1, SETTINGS, [
        ("b", "beta", "pending"), ("c", "gamma", "claimed"), ("d", "bad", "failed")], failed=True)
    add_rows_before_state_counts(ix / "manifest.sqlite")

    with indexer.open(ix) as idx:  # migrates
        assert idx.manifest.counts_problems() == []
        status = idx.status()
        # live: a, a2, b, c, d, f, t, long; done: a, a2; failed: d, f; pending: b, c (claimed), t, long
        assert (status["documents"], status["done"], status["failed"], status["pending"],
                status["deleted"], status["chunks"], status["truncated"]) == (8, 2, 2, 4, 1, 9, 1)
        assert status["contents"] == {"pending": 4, "claimed": 1, "done": 1, "failed": 2}
    summary = indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.embedded == 5  # beta, gamma, cut text and the two chunks of the long text
    assert sorted(served(ix)) == ["a", "a2", "b", "c", "long", "t"]
    with indexer.open(ix) as idx:
        assert idx.manifest.counts_problems() == []
        assert idx.status()["done"] == 6
        assert idx.verify().problems == []
    indexer.sync(ix, [("a", "alpha"), ("b", "changed")], embedder=fake_embedder,  # type: ignore[arg-type]
                 settings=SETTINGS, delete_missing=True, max_delete=1.0)
    with indexer.open(ix) as idx:
        idx.compact()
        assert idx.manifest.counts_problems() == []
        status = idx.status()
        assert (status["documents"], status["done"], status["deleted"]) == (2, 2, 7)
    assert schema_of(ix / "manifest.sqlite") == schema_of(fresh(tmp_path / "fresh.sqlite"))


def test_an_index_from_before_staged_texts_migrates_with_its_texts_staged_in_claim_order(
        tmp_path: Path, fake_embedder: object) -> None:
    """0009 moves the texts to embed out of `contents` into `staged`: an index last written by the
    schema before it, with a done, a pending, a claimed (dead worker), a failed and a failed-for-good
    content, a content re-queued by `verify --repair` (no text left) and a long document with pending
    chunks, migrates: every text waiting is staged shortest first, the claimed one still held by its
    claim (whose range is recorded), the ones failed for good held back; counts are unchanged. A sync
    then embeds the pending and the claimed ones (the claim's owner is dead), `retry` brings back the
    failures, and the re-queued content waits for a scan that reads its text again."""
    from helpers import fake_vector, served

    staged_version = next(int(f.name[:4]) for f in numbered() if f.stem.endswith("_staged_texts"))
    ix = index_with_work_at_schema(tmp_path, fake_embedder, staged_version - 1, SETTINGS, [
        ("b", "beta", "pending"), ("c", "gamma", "claimed"), ("d", "bad", "failed")], failed=True)
    kept_before = add_rows_before_staged_texts(ix / "manifest.sqlite")

    with indexer.open(ix) as idx:  # migrates
        assert idx.manifest.counts_problems() == []
        look = Inspection(idx.manifest.conn)
        assert look.state_counts() == kept_before
        status = idx.status()
        assert status["contents"] == {"pending": 4, "claimed": 1, "done": 1, "failed": 2}
        rows = [(s.seq, s.text, s.claim_id) for s in look.staged()]
        # shortest first (ties by hash); failed for good: held as 0; gamma: still claim 5's
        assert sorted(text for _, text, _ in rows) == ["bad", "beta", "failing", "gamma", "long", "text"]
        assert [len(text) for _, text, _ in rows] == sorted(len(text) for _, text, _ in rows)
        held = {text: claim for _, text, claim in rows}
        assert held == {"bad": 0, "failing": 0, "gamma": 5, "beta": None, "long": None, "text": None}
        seq_of_gamma = next(seq for seq, text, _ in rows if text == "gamma")
        claim = look.claims()[5]
        assert (claim.first_seq, claim.last_seq) == (seq_of_gamma, seq_of_gamma)
        # each staged text has its content's number, and contents are numbered in claim order
        numbers = {h: c.seq for h, c in look.contents().items()}
        assert {content_hash(text): seq for seq, text, _ in rows} == {
            h: numbers[h] for h in map(content_hash, [text for _, text, _ in rows])}
        assert max(seq for seq, _, _ in rows) < min(n for h, n in numbers.items()
                                                     if h not in {content_hash(t) for _, t, _ in rows})
    assert schema_of(ix / "manifest.sqlite") == schema_of(fresh(tmp_path / "fresh.sqlite"))

    summary = indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS)  # type: ignore[arg-type]
    assert summary.embedded == 4  # beta, gamma (its claim's owner is dead) and the long text's chunks
    with indexer.open(ix) as idx:
        assert idx.retry() == 2
    assert indexer.sync(ix, [], embedder=fake_embedder, settings=SETTINGS).embedded == 2  # type: ignore[arg-type]
    got = served(ix)
    assert sorted(got) == ["a", "b", "c", "d", "f", "long"]  # "l" waits for its text
    for key, text in (("b", "beta"), ("c", "gamma"), ("d", "bad"), ("f", "failing")):
        assert got[key].tobytes() == fake_vector(text).tobytes(), key
    source = [("a", "alpha"), ("b", "beta"), ("c", "gamma"), ("d", "bad"), ("f", "failing"),
              ("long", "long text"), ("l", "lost")]
    assert indexer.sync(ix, source, embedder=fake_embedder, settings=SETTINGS).embedded == 1  # type: ignore[arg-type]
    assert served(ix)["l"].tobytes() == fake_vector("lost").tobytes()
    with indexer.open(ix) as idx:
        assert idx.manifest.counts_problems() == []
        assert Inspection(idx.manifest.conn).staged() == []


def test_an_index_from_before_0011_with_a_changed_document_waiting_serves_the_same(
        tmp_path: Path, fake_embedder: object) -> None:
    """Before 0011 a commit pointed ready_hash at the content it marked done; since, a document serves
    its own content once done. An index written the old way (every ready_hash set), with a changed
    document whose new text waits, migrates and serves exactly what it served: the done documents
    their content, the changed one its old text; a sync then serves the new text."""
    from helpers import fake_vector, served

    ix = tmp_path / "ix"
    indexer.sync(ix, [("a", "alpha"), ("b", "beta")], embedder=fake_embedder,  # type: ignore[arg-type]
                 settings=SETTINGS)
    with indexer.open(ix, SETTINGS) as idx:  # "b" changed: scanned, not embedded
        idx.manifest.scan_batch([Record("a", "alpha", "f.jsonl", 1),
                                 Record("b", "beta, edited", "f.jsonl", 2)], ScanCounts())
    rewind_before_served_once_done(ix / "manifest.sqlite")
    with Inspection.open(ix) as look:
        assert [d.hash == d.ready_hash for _, d in sorted(look.documents().items())] == [True, False]
    before = served(ix)  # migrates
    assert sorted(before) == ["a", "b"]
    assert before["a"].tobytes() == fake_vector("alpha").tobytes()
    assert before["b"].tobytes() == fake_vector("beta").tobytes()
    assert ledger(ix / "manifest.sqlite") == [(int(f.name[:4]), f.stem) for f in numbered()]
    indexer.sync(ix, [("a", "alpha"), ("b", "beta, edited")], embedder=fake_embedder,  # type: ignore[arg-type]
                 settings=SETTINGS)
    assert served(ix)["b"].tobytes() == fake_vector("beta, edited").tobytes()
    with indexer.open(ix, SETTINGS) as idx:
        assert idx.verify().ok
