-- The statements of the manifest's reports and its run log (indexer/manifest/_reports.py).

-- name: running_runs
SELECT id, owner FROM runs WHERE state = 'running'

-- name: mark_run_interrupted
UPDATE runs SET state = 'interrupted' WHERE id = ?

-- name: insert_run
INSERT INTO runs (started_at, owner, state) VALUES (?, ?, 'running')

-- name: finish_run
UPDATE runs SET finished_at = ?, state = ?, summary = ? WHERE id = ?

-- name: kept_counts
SELECT * FROM state_counts

-- name: count_claimed_unstaged
-- A manifest from before migrations/0009 (read-only, not migrated) marks claimed contents themselves.
SELECT count(*) FROM contents WHERE claim_id IS NOT NULL AND state = 'claimed'

-- name: count_active_claims
SELECT count(*) FROM claims WHERE state = 'active'

-- name: fencing_refusals
SELECT value FROM meta WHERE key = 'fencing_refusals'

-- name: last_run
SELECT id, state, started_at, finished_at, owner FROM runs
    ORDER BY id DESC LIMIT 1

-- name: failures
SELECT d.id, c.error FROM documents d JOIN contents c ON c.hash = d.hash
    WHERE d.deleted = 0 AND c.state = 'failed' ORDER BY d.id LIMIT ?

-- name: done_slots
SELECT hash, slot FROM contents WHERE state = 'done' AND parts = 0

-- name: chunk_checksums
SELECT chunk, checksum FROM chunks

-- name: active_chunks
SELECT chunk FROM claims WHERE state = 'active'

-- name: pending_texts
SELECT count(*), coalesce(sum(c.chars), 0) FROM contents c JOIN staged s USING (seq)
    WHERE c.state = 'pending'
