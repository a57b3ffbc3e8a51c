-- The statements of `verify --repair` and `compact` (indexer/manifest/_maintenance.py).

-- name: clear_counts
DELETE FROM state_counts

-- name: insert_counts
INSERT INTO state_counts VALUES (?, ?, ?, ?, ?)

-- name: record_checksum
INSERT OR REPLACE INTO chunks VALUES (?, ?)

-- name: forget_checksum
DELETE FROM chunks WHERE chunk = ?

-- name: create_requeued
CREATE TEMP TABLE IF NOT EXISTS requeued (hash BLOB PRIMARY KEY) WITHOUT ROWID

-- name: clear_requeued
DELETE FROM requeued

-- name: add_requeued
INSERT OR IGNORE INTO requeued VALUES (?)

-- name: add_wholes_of_requeued
-- The long documents made of them: not whole any more, not served until embedded again.
INSERT OR IGNORE INTO requeued SELECT whole FROM text_chunks
    WHERE hash IN (SELECT hash FROM requeued)

-- name: requeue_wholes
UPDATE contents SET state = 'pending' WHERE parts > 0
    AND state = 'done' AND hash IN (SELECT hash FROM requeued)

-- name: unserve_requeued
-- One pass over documents: no index on ready_hash (commits would pay for it on every row).
-- Those whose own content goes back serve nothing either, not an older version.
UPDATE documents SET ready_hash = NULL
    WHERE ready_hash IN (SELECT hash FROM requeued) OR hash IN (SELECT hash FROM requeued)

-- name: requeue_contents
UPDATE contents SET state = 'pending', slot = NULL, error = ?
    WHERE hash IN (SELECT hash FROM requeued) AND state = 'done'

-- name: allocate_chunk
UPDATE meta SET value = value + 1 WHERE key = 'next_chunk' RETURNING value - 1

-- name: create_slot_moves
CREATE TEMP TABLE IF NOT EXISTS slot_moves (old INTEGER PRIMARY KEY, new INTEGER)

-- name: clear_slot_moves
DELETE FROM slot_moves

-- name: add_slot_move
INSERT INTO slot_moves VALUES (?, ?)

-- name: unslot_moved
-- Two steps, so that UNIQUE(slot) never sees the same value twice mid-update.
UPDATE contents SET slot = -1 - slot WHERE slot IN (SELECT old FROM slot_moves)

-- name: slot_moved
UPDATE contents SET slot = (SELECT new FROM slot_moves WHERE old = -1 - slot)
    WHERE slot < 0
