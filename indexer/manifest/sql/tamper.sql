-- Test seams (indexer/manifest/_tamper.py): writes that put a manifest in a state that only a stalled
-- worker, damage, an older or a newer indexer leaves. No code of the indexer runs them.

-- name: set_claim_expiry
UPDATE claims SET expires_at = ? WHERE id = ?

-- name: forget_checksums
-- As an index migrated from before 0004 has them: none.
DELETE FROM chunks

-- name: forget_config
-- As an index made before 0004 has it: no copy of index.toml.
DELETE FROM config

-- name: skew_state_counts
UPDATE state_counts SET documents = documents + ?, chunks = chunks + ? WHERE state = ?

-- name: unfinish_content
-- Pending again without anything else knowing: its slot forgotten, its text not staged.
UPDATE contents SET state = 'pending', slot = NULL WHERE hash = ?

-- name: misnumber_document
UPDATE documents SET seq = seq + 1 WHERE id = ?

-- name: record_future_migration
INSERT INTO schema_migrations VALUES (?, 'from_the_future', 0)
