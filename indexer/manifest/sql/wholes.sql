-- The statements of long documents: wholes and their chunks (indexer/manifest/_wholes.py).

-- name: add_wholes
INSERT OR IGNORE INTO contents (hash, chars, parts) VALUES (?, ?, ?)

-- name: add_chunk_rows
INSERT OR IGNORE INTO text_chunks VALUES (?, ?, ?, ?, ?)

-- name: items_with_lost_parts
-- After the scan's ITEMS: the batch's wholes with a pending chunk whose staged text is gone.
SELECT i.key FROM items i JOIN contents w ON w.hash = i.hash
    WHERE w.parts > 0 AND EXISTS (SELECT 1 FROM text_chunks t JOIN contents c ON c.hash = t.hash
        WHERE t.whole = w.hash AND c.state = 'pending'
            AND NOT EXISTS (SELECT 1 FROM staged s WHERE s.seq = c.seq))

-- name: any_wholes
SELECT 1 FROM text_chunks LIMIT 1

-- name: create_settling
CREATE TEMP TABLE IF NOT EXISTS settling (hash BLOB PRIMARY KEY) WITHOUT ROWID

-- name: clear_settling
DELETE FROM settling

-- name: settle_wholes_of_chunk
INSERT OR IGNORE INTO settling SELECT whole FROM text_chunks WHERE hash = ?

-- name: settle_whole
INSERT OR IGNORE INTO settling VALUES (?)

-- name: settle
-- A whole's state from its chunks' states.
UPDATE contents SET state = w.state, error = w.error FROM (
    SELECT t.whole AS hash,
        CASE WHEN sum(c.state != 'done') = 0 THEN 'done'
             WHEN sum(c.state = 'failed') > 0 THEN 'failed' ELSE 'pending' END AS state,
        (SELECT 'chunk ' || t2.ordinal || ': ' || c2.error FROM text_chunks t2 JOIN contents c2
            ON c2.hash = t2.hash WHERE t2.whole = t.whole AND c2.state = 'failed'
            ORDER BY t2.ordinal LIMIT 1) AS error
    FROM text_chunks t JOIN contents c ON c.hash = t.hash
    WHERE t.whole IN (SELECT hash FROM settling) GROUP BY t.whole) AS w
    WHERE contents.hash = w.hash AND contents.parts > 0

-- name: serve_settled
UPDATE documents SET ready_hash = hash WHERE seq IN (SELECT c.seq FROM settling s
    JOIN contents c ON c.hash = s.hash WHERE c.state = 'done')

-- name: broken_wholes
SELECT w.hash, 'chunk ' || t.ordinal || ' is ' || c.state FROM contents w
    JOIN text_chunks t ON t.whole = w.hash JOIN contents c ON c.hash = t.hash
    WHERE w.parts > 0 AND w.state = 'done' AND c.state != 'done' GROUP BY w.hash
UNION ALL
SELECT w.hash, 'its chunk list has ' || count(t.ordinal) || ' of ' || w.parts || ' chunks'
    FROM contents w LEFT JOIN text_chunks t ON t.whole = w.hash
    WHERE w.parts > 0 GROUP BY w.hash HAVING count(t.ordinal) != w.parts
