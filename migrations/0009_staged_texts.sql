-- Texts to embed, staged apart from contents, in the order claims take them (issue 11, the driver).
-- Until now a pending text lived in its contents row, keyed by hash: a claim read and rewrote rows
-- spread over the whole table (ordered by length through an index), a commit rewrote them again, and
-- the table carried every pending text, so that at a million documents each of those rows sat on a
-- page of its own far past the page cache. Now:
--   staged: one row per content waiting to be embedded (pending, or failed for good), numbered in
--       claim order (a scan batch's new texts, shortest first). A claim takes the first free rows and
--       marks them with its id; a commit deletes the rows it embedded. Both walk neighbouring pages.
--   contents: small rows (no text), `seq` pointing at the content's staged row; a claim no longer
--       touches them (no 'claimed' state: claimed-ness is staged.claim_id under an active claim).
--   claims: the range of staged rows each one holds (first_seq..last_seq), to free them by range.
CREATE TABLE staged (
    seq      INTEGER PRIMARY KEY,        -- claim order
    hash     BLOB NOT NULL,              -- contents.hash (whose seq points back here)
    text     TEXT NOT NULL,
    claim_id INTEGER                     -- the claim holding it; NULL: free to claim; 0: its content
                                         -- failed for good (`sync --retry-failed` frees it)
);
INSERT INTO staged (hash, text, claim_id)
    SELECT hash, text, CASE state WHEN 'claimed' THEN claim_id WHEN 'failed' THEN 0 END FROM contents
    WHERE text IS NOT NULL AND parts = 0 AND state != 'done' ORDER BY chars, hash;

ALTER TABLE claims ADD COLUMN first_seq INTEGER;
ALTER TABLE claims ADD COLUMN last_seq INTEGER;
UPDATE claims SET first_seq = (SELECT min(seq) FROM staged WHERE claim_id = claims.id),
                  last_seq = (SELECT max(seq) FROM staged WHERE claim_id = claims.id)
    WHERE state = 'active';

-- contents rebuilt without its texts, its claim column and the two indexes that served claims.
CREATE INDEX staged_by_hash_0009 ON staged (hash);
ALTER TABLE contents RENAME TO contents_0008;
CREATE TABLE contents (
    hash      BLOB PRIMARY KEY,          -- XXH3-128 of the UTF-8 text, 16 bytes
    state     TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    chars     INTEGER NOT NULL,          -- length in characters
    seq       INTEGER,                   -- its text's row of staged; NULL once done (or when verify
                                         -- --repair re-queued it: the next scan that reads it stages it)
    slot      INTEGER,                   -- row of vectors.zarr, set when done (unique: contents_by_slot)
    attempts  INTEGER NOT NULL DEFAULT 0,
    error     TEXT,
    parts     INTEGER NOT NULL DEFAULT 0, -- > 0: a long document's whole text, in text_chunks
    truncated INTEGER NOT NULL DEFAULT 0  -- 1: embedded whole though longer than the model's window
) WITHOUT ROWID;
INSERT INTO contents (hash, state, chars, seq, slot, attempts, error, parts, truncated)
    SELECT c.hash, CASE c.state WHEN 'claimed' THEN 'pending' ELSE c.state END, c.chars, s.seq, c.slot,
           c.attempts, c.error, c.parts, c.truncated
    FROM contents_0008 c LEFT JOIN staged s ON s.hash = c.hash ORDER BY c.hash;
DROP TABLE contents_0008;
DROP INDEX staged_by_hash_0009;
CREATE UNIQUE INDEX contents_by_slot ON contents (slot) WHERE slot IS NOT NULL;

-- As in 0008, on the rebuilt table; a content is never 'claimed' any more.
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
        FROM documents WHERE hash = old.hash AND deleted = 0)
    WHERE state = old.state;
    UPDATE state_counts SET (contents, documents, chunks, truncated) = (SELECT
        state_counts.contents + (new.parts = 0), state_counts.documents + count(*),
        state_counts.chunks + count(*) * max(new.parts, 1), state_counts.truncated + count(*) * new.truncated
        FROM documents WHERE hash = new.hash AND deleted = 0)
    WHERE state = new.state;
END;
