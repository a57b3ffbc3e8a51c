-- The schema of a new manifest, equal to 0001..N applied in order (tests/test_migrations.py checks).
-- Update it with every new numbered migration.
CREATE TABLE contents (
    seq       INTEGER PRIMARY KEY,       -- claim order: while the content waits, its text is staged's
                                         -- row of the same number (none after verify --repair
                                         -- re-queued it: the next scan that reads its text stages it)
    hash      BLOB NOT NULL,             -- XXH3-128 of the UTF-8 text, 16 bytes (unique: contents_by_hash)
    state     TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    chars     INTEGER NOT NULL,          -- length in characters
    slot      INTEGER,                   -- row of vectors.zarr, set when done (unique: contents_by_slot)
    attempts  INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    parts     INTEGER NOT NULL DEFAULT 0, -- > 0: a long document's whole text, in text_chunks
    truncated INTEGER NOT NULL DEFAULT 0  -- 1: embedded whole though longer than the model's window
);
CREATE UNIQUE INDEX contents_by_hash ON contents (hash);
CREATE UNIQUE INDEX contents_by_slot ON contents (slot) WHERE slot IS NOT NULL;
-- The pending contents, in claim order: few at rest, so that a scan finds re-queued texts at once.
CREATE INDEX contents_pending ON contents (seq) WHERE state = 'pending';

-- Texts waiting to be embedded, in the order claims take them (migrations/0009 says why).
CREATE TABLE staged (
    seq      INTEGER PRIMARY KEY,        -- contents.seq: claim order (a scan batch's new texts,
                                         -- shortest first)
    hash     BLOB NOT NULL,              -- contents.hash
    text     TEXT NOT NULL,
    claim_id INTEGER                     -- the claim holding it; NULL: free to claim; 0: its content
                                         -- failed for good (`sync --retry-failed` frees it)
);

CREATE TABLE documents (
    id         TEXT PRIMARY KEY,
    hash       BLOB NOT NULL,            -- the content the source holds now
    ready_hash BLOB,                     -- the content served while `hash`'s is not done (0011); NULL: none
    deleted    INTEGER NOT NULL DEFAULT 0
    -- added by 0010: contents.seq of `hash` (NULL only for a deleted document whose content is gone)
    , seq INTEGER
) WITHOUT ROWID;
CREATE INDEX documents_by_content ON documents (seq, deleted);  -- deleted: the status counts read it

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
    -- added by 0009: the range of staged rows the claim holds
    , first_seq INTEGER, last_seq INTEGER
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

CREATE TABLE chunks (
    chunk    INTEGER PRIMARY KEY,        -- the chunk number: slots chunk * chunk_rows ...
    checksum BLOB NOT NULL               -- XXH3-64 of the chunk file, then of each of its rows: 8 bytes each
);

CREATE TABLE config (
    key   TEXT PRIMARY KEY,              -- 'index.toml': its text, to recover a lost or empty one
    value TEXT NOT NULL
);
-- "IDXR": a manifest.sqlite with another application_id is not ours, and is never written to.
PRAGMA application_id = 1229215826;

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

CREATE TABLE skips (
    place  TEXT PRIMARY KEY,         -- "file:line", "file row N" or a path: where the record was read
    reason TEXT NOT NULL
) WITHOUT ROWID;

-- What `indexer status` reports, kept instead of counted: status reads these few rows, where counting
-- joined every document to its content (minutes at 10M documents). They change in the same
-- transaction as the rows they count, so they are exact in every snapshot a reader takes, a sync's
-- included: by the trigger below where a content changes state, and by the scan, delete-missing and
-- compact statement by statement (indexer/_counts.py says why). `indexer verify` recounts and compares.
--   state 'pending' (claimed included: a claim touches no content), 'done', 'failed': contents
--       (parts = 0) in that state; and the live documents whose current content (documents.hash) is
--       in that state, their chunks (max(parts, 1) each) and how many of them were truncated
--   state 'deleted': documents deleted (other columns 0)
-- Live documents are the sum over the states; claimed contents are counted where asked, from the
-- staged rows of the active claims.
CREATE TABLE state_counts (
    state     TEXT PRIMARY KEY,
    contents  INTEGER NOT NULL DEFAULT 0,
    documents INTEGER NOT NULL DEFAULT 0,
    chunks    INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO state_counts (state) VALUES ('pending'), ('done'), ('failed'), ('deleted');

-- A content changes state (commits, failures, retries, repairs, wholes settling): it moves, with
-- every live document that has it, out of its old state's row, into its new.
CREATE TRIGGER contents_counted_update AFTER UPDATE OF state, parts, truncated ON contents
WHEN ((old.state = 'pending') != (new.state = 'pending') OR (old.state = 'done') != (new.state = 'done')
    OR old.parts != new.parts OR old.truncated != new.truncated)
    -- A commit gives a content its slot as it marks it done, and counts its rows itself, all at once
    -- (indexer/_counts.py: commit_done): a lookup and two updates a row cost more than one query.
    AND NOT (old.slot IS NULL AND new.slot IS NOT NULL)
BEGIN
    UPDATE state_counts SET (contents, documents, chunks, truncated) = (SELECT
        state_counts.contents - (old.parts = 0), state_counts.documents - count(*),
        state_counts.chunks - count(*) * max(old.parts, 1), state_counts.truncated - count(*) * old.truncated
        FROM documents WHERE seq = old.seq AND deleted = 0)
    WHERE state = old.state;
    UPDATE state_counts SET (contents, documents, chunks, truncated) = (SELECT
        state_counts.contents + (new.parts = 0), state_counts.documents + count(*),
        state_counts.chunks + count(*) * max(new.parts, 1), state_counts.truncated + count(*) * new.truncated
        FROM documents WHERE seq = new.seq AND deleted = 0)
    WHERE state = new.state;
END;
