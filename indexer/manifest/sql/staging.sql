-- The statements of the texts waiting to be embedded, `staged` (indexer/manifest/_staging.py).

-- name: next_content_number
SELECT coalesce(max(seq), 0) + 1 FROM contents

-- name: add_contents
-- One statement for all the rows, not one a row (each would open and close a statement journal).
-- The unique index on hash turns away the contents known already; their numbers go unused.
-- Each text's length and truncated flag go as one number (2 x chars + flag), read without a
-- parse of a JSON value each.
INSERT INTO contents (seq, hash, chars, truncated)
    SELECT :first + key, substr(:hashes, key * 16 + 1, 16), value >> 1, value & 1
    FROM json_each(:rows) WHERE true ON CONFLICT (hash) DO NOTHING

-- name: count_contents_from
SELECT count(*) FROM contents WHERE seq >= ?

-- name: contents_from
SELECT seq FROM contents WHERE seq >= ?

-- name: stage_text
INSERT INTO staged (seq, hash, text) VALUES (?, ?, ?)

-- name: stage_texts
-- (substr of an empty blob is NULL: hence the coalesce.)
INSERT INTO staged (seq, hash, text)
    SELECT :first + key, substr(:hashes, key * 16 + 1, 16),
        coalesce(CAST(substr(:texts, (value >> 32) + 1, value & 4294967295) AS TEXT), '')
    FROM json_each(:spans) WHERE value IS NOT NULL

-- name: staged_of
SELECT seq FROM staged WHERE seq IN (SELECT value FROM json_each(?))

-- name: free_claimed
UPDATE staged SET claim_id = NULL WHERE claim_id = ?1
    AND seq BETWEEN (SELECT first_seq FROM claims WHERE id = ?1)
    AND (SELECT last_seq FROM claims WHERE id = ?1)

-- name: count_claimed
SELECT count(*) FROM claims k JOIN staged s
    ON s.seq BETWEEN k.first_seq AND k.last_seq AND s.claim_id = k.id WHERE k.state = 'active'
