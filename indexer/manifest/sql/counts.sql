-- The statements that keep the status counts, `state_counts` (indexer/manifest/_counts.py).

-- name: add_documents
UPDATE state_counts SET documents = documents + ?2, chunks = chunks + ?3,
    truncated = truncated + ?4 WHERE state = ?1

-- name: add
UPDATE state_counts SET contents = contents + ?, documents = documents + ? WHERE state = ?

-- name: pending_truncated
SELECT truncated FROM state_counts WHERE state = 'pending'

-- name: count_truncated_documents_of
SELECT count(*) FROM documents d JOIN contents c ON c.seq = d.seq
    WHERE d.seq IN (SELECT value FROM json_each(?)) AND d.deleted = 0 AND c.truncated
