-- The statements of the scan (indexer/manifest/_scan.py). Those marked "after ITEMS" follow the
-- batch's WITH clause (`_scan._ITEMS`: the batch's records as the table `items`).

-- name: create_scan_tables
-- Item k of a batch is scanned as ordinal `first + k`. scan_seen keeps the ordinal of each id's
-- first sighting, scan_wheres each batch's places (line numbers where a source has them), so
-- that a "file:line" text is made only for a warning.
CREATE TEMP TABLE IF NOT EXISTS scan_seen (id TEXT PRIMARY KEY, seen_at INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS scan_wheres (first INTEGER PRIMARY KEY, at TEXT,
    places TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS scan_odd (key INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS scan_new_hashes (hash BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS scan_skips (place TEXT PRIMARY KEY, reason TEXT NOT NULL)
    WITHOUT ROWID;
DELETE FROM scan_seen; DELETE FROM scan_wheres; DELETE FROM scan_new_hashes;
DELETE FROM scan_skips;

-- name: any_skips
SELECT 1 FROM skips LIMIT 1

-- name: seen_where
SELECT at, places ->> (?1 - first) FROM scan_wheres
    WHERE first <= ?1 ORDER BY first DESC LIMIT 1

-- name: skip_reported
SELECT 1 FROM skips WHERE place = ? AND reason = ?

-- name: add_batch_places
INSERT INTO scan_wheres VALUES (?, ?, ?)

-- name: clear_odd_ids
DELETE FROM scan_odd

-- name: add_odd_id
INSERT INTO scan_odd VALUES (?, ?)

-- name: see_items
-- After ITEMS. In id order, a batch walks each B-tree once instead of jumping about: much faster
-- when the ids come in random order (bench/RESULTS.md, notes on profiles).
INSERT INTO scan_seen SELECT id, :first + key FROM items
    WHERE true ORDER BY id ON CONFLICT DO NOTHING

-- name: items_seen_before
-- After ITEMS: (k, ordinal of the first sighting) of the batch's ids an earlier batch had.
SELECT i.key, s.seen_at FROM items i
    JOIN scan_seen s USING (id) WHERE s.seen_at != :first + i.key ORDER BY i.key

-- name: forget_odd_id
DELETE FROM scan_odd WHERE key = ?

-- name: see_skipped
INSERT OR IGNORE INTO scan_seen VALUES (?, ?)

-- name: add_skip
INSERT OR REPLACE INTO scan_skips VALUES (?, ?)

-- name: new_and_changed
-- After ITEMS: one code for each new or changed document (what it says: _scan.py), as one row.
SELECT group_concat(i.key * 4 + 2 * (d.hash IS NULL OR
    d.deleted) + (d.hash IS NOT NULL)) FROM (SELECT * FROM items ORDER BY id) i
    LEFT JOIN documents d USING (id) WHERE d.hash IS NULL OR d.hash != i.hash OR d.deleted

-- name: add_new_hash
INSERT OR IGNORE INTO scan_new_hashes SELECT ?1
    WHERE NOT EXISTS (SELECT 1 FROM contents WHERE hash = ?1)

-- name: count_new_hashes
SELECT count(*) FROM scan_new_hashes

-- name: no_documents
SELECT NOT EXISTS (SELECT 1 FROM documents)

-- name: count_missing
SELECT count(*) FROM documents
    WHERE deleted = 0 AND id NOT IN (SELECT id FROM scan_seen)

-- name: clear_skips
DELETE FROM skips

-- name: keep_skips
INSERT INTO skips SELECT place, reason FROM scan_skips

-- name: count_live
SELECT count(*) FROM documents WHERE deleted = 0

-- name: missing_ids
SELECT id FROM documents
    WHERE deleted = 0 AND id NOT IN (SELECT id FROM scan_seen) ORDER BY id LIMIT ?
