-- The statements of claims, leases and fenced commits (indexer/manifest/_claims.py).

-- name: active_claims
SELECT id, owner, expires_at FROM claims WHERE state = 'active'

-- name: expire_claim
UPDATE claims SET state = 'expired' WHERE id = ?

-- name: count_active_claims
SELECT count(*) FROM claims WHERE state = 'active'

-- name: free_texts
-- A claim's texts as one row: the free staged rows, first ones first, as comma-separated numbers,
-- hex hashes end to end, comma-separated byte lengths and the UTF-8 texts end to end.
SELECT group_concat(seq), group_concat(hex(hash), ''),
    group_concat(length(CAST(text AS BLOB))), CAST(group_concat(text, '') AS BLOB)
    FROM (SELECT seq, hash, text FROM staged WHERE claim_id IS NULL ORDER BY seq LIMIT ?)

-- name: take_chunks
UPDATE meta SET value = value + ? WHERE key = 'next_chunk' RETURNING value - ?

-- name: insert_claim
INSERT INTO claims (token, owner, chunk, expires_at, state, first_seq, last_seq) VALUES (?, ?, ?, ?, 'active', ?, ?)

-- name: mark_claimed
UPDATE staged SET claim_id = ? WHERE seq BETWEEN ? AND ? AND claim_id IS NULL

-- name: renew_lease
UPDATE claims SET expires_at = ? WHERE id = ?

-- name: claim_token
SELECT token, state FROM claims WHERE id = ?

-- name: count_refusals
UPDATE meta SET value = value + ? WHERE key = 'fencing_refusals'

-- name: record_checksum
INSERT OR REPLACE INTO chunks VALUES (?, ?)

-- name: free_rows_not_done
UPDATE staged SET claim_id = NULL WHERE seq IN (SELECT value FROM json_each(?)) AND claim_id = ?

-- name: delete_done_staged
-- A claim's rows done: their staged texts go (the rows it still holds, from its first to its last: its
-- rows not done were freed before), their contents are done with their slots (mark_contents_done).
-- One statement each for all the rows, not one a row (a statement on a table with a trigger and
-- unique indexes opens and closes a statement journal each time it runs).
DELETE FROM staged WHERE seq BETWEEN :lo AND :hi AND claim_id = :claim

-- name: mark_contents_done
-- The rows come as flat arrays indexed by slot - :first: the contents' numbers (null where the row
-- failed) and their hashes end to end (zeros there): a JSON array of pairs would cost a parse of each
-- pair. "+contents.hash": each row is found by its number, its hash checked.
UPDATE contents SET state = 'done', slot = :first + j.key, error = NULL
    FROM json_each(:seqs) j WHERE contents.seq = j.value
    AND +contents.hash = substr(:hashes, j.key * 16 + 1, 16)

-- name: count_live_documents_of
SELECT count(*) FROM documents WHERE deleted = 0
    AND seq IN (SELECT value FROM json_each(?))

-- name: count_failed_attempt
UPDATE contents SET attempts = attempts + 1, error = ?2,
    state = CASE WHEN attempts + 1 >= ?3 THEN 'failed' ELSE 'pending' END
    WHERE seq = ?4 AND hash = ?1 RETURNING state

-- name: mark_staged_failed
UPDATE staged SET claim_id = ? WHERE seq = ?

-- name: mark_committed
UPDATE claims SET state = 'committed' WHERE id = ?

-- name: release_claim
UPDATE claims SET state = 'released' WHERE id = ? AND token = ? AND state = 'active'

-- name: retry_failed_wholes
UPDATE contents SET state = 'pending', error = NULL WHERE state = 'failed' AND parts > 0

-- name: unmark_staged_failed
UPDATE staged SET claim_id = NULL WHERE claim_id = ?

-- name: retry_failed_contents
UPDATE contents SET state = 'pending', attempts = 0, error = NULL WHERE state = 'failed'
