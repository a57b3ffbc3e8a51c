-- Chunk checksums, a copy of the embedding configuration, and a mark that says whose file this is.
-- (IF NOT EXISTS: a manifest whose ledger lost rows, as tests fake an old one, upgrades again.)
--
-- A checksum per chunk file, recorded in the same transaction that marks its rows done: `verify`
-- finds a chunk changed since it was written (zeroed, bits flipped) and `verify --repair` re-queues its
-- rows. Chunks written before this migration have none until `verify --repair` records them.
CREATE TABLE IF NOT EXISTS chunks (
    chunk    INTEGER PRIMARY KEY,        -- the chunk number: slots chunk * chunk_rows ...
    checksum BLOB NOT NULL               -- XXH3-64 of the chunk file, then of each of its rows: 8 bytes each
);
-- The text of index.toml: an index whose index.toml is lost or empty (a power cut) is recovered from
-- it, never created again over its own data.
CREATE TABLE IF NOT EXISTS config (
    key   TEXT PRIMARY KEY,              -- 'index.toml'
    value TEXT NOT NULL
);
-- "IDXR": a manifest.sqlite with another application_id is not ours, and is never written to.
PRAGMA application_id = 1229215826;
