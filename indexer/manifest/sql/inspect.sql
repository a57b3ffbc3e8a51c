-- The statements of the manifest's inspection (indexer/manifest/_inspect.py): read-only looks at its
-- rows and its schema, for tests and checks of what a sync, a kill or a migration left.

-- name: documents
SELECT id, hash, ready_hash, deleted, seq FROM documents

-- name: contents
SELECT hash, seq, state, chars, slot, attempts, error, parts, truncated FROM contents

-- name: content_states
-- 'claimed' where an active claim holds the content's staged text (a claim touches no content).
SELECT c.hash, iif(k.state = 'active', 'claimed', c.state) FROM contents c
    LEFT JOIN staged s ON s.seq = c.seq LEFT JOIN claims k ON k.id = s.claim_id

-- name: staged
SELECT seq, hash, text, claim_id FROM staged ORDER BY seq

-- name: claims
SELECT id, token, owner, chunk, expires_at, state, first_seq, last_seq FROM claims ORDER BY id

-- name: text_chunks
SELECT whole, ordinal, hash, char_start, char_end FROM text_chunks ORDER BY whole, ordinal

-- name: runs
SELECT id, state, summary FROM runs ORDER BY id

-- name: state_counts
SELECT state, contents, documents, chunks, truncated FROM state_counts

-- name: meta
SELECT key, value FROM meta

-- name: live_documents
-- This and the two below read a manifest of every schema version (schema 1's included).
SELECT count(*) FROM documents WHERE deleted = 0

-- name: contents_by_state
SELECT state, count(*) FROM contents GROUP BY state

-- name: active_claims
SELECT count(*) FROM claims WHERE state = 'active'

-- name: applied_migrations
SELECT version, name, applied_at FROM schema_migrations ORDER BY version

-- name: schema_objects
SELECT type, name, tbl_name, sql FROM sqlite_master

-- name: table_columns
SELECT name FROM pragma_table_info(?) ORDER BY cid

-- name: application_id
PRAGMA application_id

-- name: integrity_check
PRAGMA integrity_check

-- name: begin_snapshot
BEGIN

-- name: try_write_lock
-- Takes the write lock if no other connection holds it (the caller rolls back at once).
BEGIN IMMEDIATE

-- name: rollback
-- Ends a snapshot, or the write lock taken: nothing was written.
ROLLBACK
