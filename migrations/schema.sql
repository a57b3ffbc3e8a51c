-- The schema of a new manifest, equal to 0001..N applied in order (tests/test_migrations.py checks).
-- Update it with every new numbered migration.
CREATE TABLE contents (
    hash      BLOB PRIMARY KEY,          -- XXH3-128 of the UTF-8 text, 16 bytes
    state     TEXT NOT NULL DEFAULT 'pending'
              CHECK (state IN ('pending', 'claimed', 'done', 'failed')),
    chars     INTEGER NOT NULL,          -- length in characters: claims take similar lengths together
    text      TEXT,                      -- staged until done, then NULL: the manifest never keeps vectors
    slot      INTEGER,                   -- row of vectors.zarr, set when done (unique: contents_by_slot)
    claim_id  INTEGER,
    attempts  INTEGER NOT NULL DEFAULT 0,
    error     TEXT
    -- added by 0005 (ALTER TABLE ADD COLUMN), written as SQLite stores it so the schemas compare equal
    -- parts > 0: a long document's whole text, in text_chunks; truncated = 1: embedded whole though
    -- longer than the model's window
    , parts     INTEGER NOT NULL DEFAULT 0, truncated INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE UNIQUE INDEX contents_by_slot ON contents (slot) WHERE slot IS NOT NULL;
CREATE INDEX contents_pending_by_chars ON contents (chars) WHERE state = 'pending' AND parts = 0;
CREATE INDEX contents_by_claim ON contents (claim_id) WHERE claim_id IS NOT NULL;

CREATE TABLE documents (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL,            -- the content the source holds now
    ready_hash BLOB,                     -- the content whose vector is served; NULL before the first
    deleted    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX documents_by_hash ON documents (hash);

CREATE TABLE text_chunks (
    whole      BLOB NOT NULL,            -- contents.hash of the whole document text (parts > 0)
    ordinal    INTEGER NOT NULL,         -- 0, 1, ... in text order
    hash       BLOB NOT NULL,            -- contents.hash of the chunk's text
    char_start INTEGER NOT NULL,         -- the chunk is text[char_start:char_end] of the document
    char_end   INTEGER NOT NULL,
    PRIMARY KEY (whole, ordinal)
) WITHOUT ROWID;
CREATE INDEX text_chunks_by_hash ON text_chunks (hash);

CREATE TABLE claims (
    id         INTEGER PRIMARY KEY,
    token      TEXT NOT NULL,            -- fencing token: a commit must present it
    owner      TEXT NOT NULL,            -- host|pid|process start time
    chunk      INTEGER NOT NULL UNIQUE,
    expires_at REAL NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('active', 'committed', 'released', 'expired'))
);
CREATE INDEX claims_active ON claims (state) WHERE state = 'active';

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO meta (key, value) VALUES ('next_chunk', 0), ('fencing_refusals', 0);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    owner       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    summary     TEXT                     -- JSON of the run's summary once it ends
);

-- What each push target (`indexer push DIR --to lancedb:PATH`) holds, so that a push sends only what
-- changed since the last one: upserts of documents whose served content differs from the one pushed,
-- deletes of pushed documents the index no longer serves.
CREATE TABLE push_targets (
    id           INTEGER PRIMARY KEY,
    target       TEXT NOT NULL UNIQUE,   -- the target's key, e.g. lancedb:/abs/path#table
    created_at   REAL NOT NULL,
    last_push_at REAL                    -- when a push to it last completed; NULL before the first
);
-- One row per document the target may hold. `hash` is the content whose vector it holds; NULL while a
-- push is sending or deleting it (written before the target is touched): a push that stopped there
-- left the target unknown for that document, and the next push sends it again or deletes it.
CREATE TABLE pushed (
    target_id INTEGER NOT NULL REFERENCES push_targets (id),
    doc_id    TEXT NOT NULL,
    hash      BLOB,
    PRIMARY KEY (target_id, doc_id)
) WITHOUT ROWID;
