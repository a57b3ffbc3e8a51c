-- The statements of an open manifest (indexer/manifest/_connection.py); its PRAGMAs are there.

-- name: applied_migrations
SELECT version FROM schema_migrations

-- name: is_blank
SELECT NOT EXISTS (SELECT 1 FROM documents)
    AND NOT EXISTS (SELECT 1 FROM contents)
    AND (SELECT value FROM meta WHERE key = 'next_chunk') = 0

-- name: schema_objects
SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY type, name

-- name: has_table
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?

-- name: stored_config
SELECT value FROM config WHERE key = 'index.toml'

-- name: store_config
INSERT OR IGNORE INTO config VALUES ('index.toml', ?)
