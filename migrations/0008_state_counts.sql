-- What `indexer status` reports, kept instead of counted: status reads these few rows, where counting
-- joined every document to its content (minutes at 10M documents). They change in the same
-- transaction as the rows they count, so they are exact in every snapshot a reader takes, a sync's
-- included: by the trigger below where a content changes state, and by the scan, delete-missing and
-- compact statement by statement (indexer/_counts.py says why). `indexer verify` recounts and compares.
--   state 'pending' (claimed included: a claim or its release changes no count, so the claim path
--       never fires a trigger), 'done', 'failed': contents (parts = 0) in that state; and the live
--       documents whose current content (documents.hash) is in that state, their chunks (max(parts, 1)
--       each) and how many of them were truncated
--   state 'deleted': documents deleted (other columns 0)
-- Live documents are the sum over the states; claimed contents are counted where asked, through the
-- small index of contents in claims.
CREATE TABLE state_counts (
    state     TEXT PRIMARY KEY,
    contents  INTEGER NOT NULL DEFAULT 0,
    documents INTEGER NOT NULL DEFAULT 0,
    chunks    INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO state_counts (state) VALUES ('pending'), ('done'), ('failed'), ('deleted');

-- The trigger counts the live documents of a content through this index: with `deleted` in it, without
-- reading each document's row (measured: the commit's SQL a third faster than with (hash) alone).
DROP INDEX documents_by_hash;
CREATE INDEX documents_by_hash ON documents (hash, deleted);

-- A content changes state (commits, failures, retries, repairs, wholes settling): it moves, with
-- every live document that has it, out of its old state's row, into its new.
CREATE TRIGGER contents_counted_update AFTER UPDATE OF state, parts, truncated ON contents
WHEN (old.state = 'claimed' OR old.state = 'pending') != (new.state = 'claimed' OR new.state = 'pending')
    OR (old.state = 'done') != (new.state = 'done') OR old.parts != new.parts
    OR old.truncated != new.truncated
BEGIN
    UPDATE state_counts SET (contents, documents, chunks, truncated) = (SELECT
        state_counts.contents - (old.parts = 0), state_counts.documents - count(*),
        state_counts.chunks - count(*) * max(old.parts, 1), state_counts.truncated - count(*) * old.truncated
        FROM documents WHERE hash = old.hash AND deleted = 0)
    WHERE state = CASE old.state WHEN 'claimed' THEN 'pending' ELSE old.state END;
    UPDATE state_counts SET (contents, documents, chunks, truncated) = (SELECT
        state_counts.contents + (new.parts = 0), state_counts.documents + count(*),
        state_counts.chunks + count(*) * max(new.parts, 1), state_counts.truncated + count(*) * new.truncated
        FROM documents WHERE hash = new.hash AND deleted = 0)
    WHERE state = CASE new.state WHEN 'claimed' THEN 'pending' ELSE new.state END;
END;

-- The counts of an existing index, from its rows. Documents by the state of their content: every
-- content in hash order against the index of documents by hash (both in hash order, no random probe
-- of a large table), less the deleted documents (few, read once through `documents`).
UPDATE state_counts SET contents = x.n FROM (
    SELECT CASE state WHEN 'claimed' THEN 'pending' ELSE state END AS state, count(*) AS n
    FROM contents WHERE parts = 0 GROUP BY 1) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = x.n, chunks = x.n_chunks, truncated = x.n_truncated FROM (
    SELECT CASE c.state WHEN 'claimed' THEN 'pending' ELSE c.state END AS state, count(*) AS n,
        sum(max(c.parts, 1)) AS n_chunks, sum(c.truncated) AS n_truncated
    FROM contents AS c JOIN documents AS d INDEXED BY documents_by_hash ON d.hash = c.hash
    GROUP BY 1) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = state_counts.documents - x.n, chunks = state_counts.chunks - x.n_chunks,
    truncated = state_counts.truncated - x.n_truncated FROM (
    SELECT CASE c.state WHEN 'claimed' THEN 'pending' ELSE c.state END AS state, count(*) AS n,
        sum(max(c.parts, 1)) AS n_chunks, sum(c.truncated) AS n_truncated
    FROM documents AS d JOIN contents AS c ON c.hash = d.hash WHERE d.deleted != 0
    GROUP BY 1) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = (SELECT count(*) FROM documents WHERE deleted != 0)
    WHERE state = 'deleted';
