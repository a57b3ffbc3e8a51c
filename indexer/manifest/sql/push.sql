-- What each push target holds (indexer/manifest/_push.py). The queries a push reads, which compose
-- the content a document serves, are in that module.

-- name: push_target
SELECT id FROM push_targets WHERE target = ?

-- name: add_push_target
INSERT INTO push_targets (target, created_at) VALUES (?, ?) RETURNING id

-- name: forget_pushed
DELETE FROM pushed WHERE target_id = ?

-- name: mark_pushing
INSERT OR REPLACE INTO pushed (target_id, doc_id, hash) VALUES (?, ?, NULL)

-- name: mark_pushed
UPDATE pushed SET hash = ? WHERE target_id = ? AND doc_id = ?

-- name: mark_unpushed
DELETE FROM pushed WHERE target_id = ? AND doc_id = ?

-- name: finish_push
UPDATE push_targets SET last_push_at = ? WHERE id = ?
