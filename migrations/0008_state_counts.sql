-- What `indexer status` reports, kept instead of counted: status reads these few rows, where counting
-- joined every document to its content (minutes at 10M documents). Triggers keep them in the same
-- transaction as every change to the rows they count, so they are exact in every snapshot a reader
-- takes, a sync's included, and no code path can forget them. `indexer verify` recounts and compares.
--   state 'pending', 'claimed', 'done', 'failed': contents (parts = 0) in that state; documents: live
--       documents whose current content (documents.hash) is in that state, with their chunks
--       (max(parts, 1) each) and how many of them were truncated
--   state 'live', 'deleted': documents (live: deleted = 0), whatever their content; other columns 0
CREATE TABLE state_counts (
    state     TEXT PRIMARY KEY,
    contents  INTEGER NOT NULL DEFAULT 0,
    documents INTEGER NOT NULL DEFAULT 0,
    chunks    INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO state_counts (state) VALUES ('pending'), ('claimed'), ('done'), ('failed'), ('live'), ('deleted');

-- A content changes state (claims, commits, failures, expiries, releases, retries, repairs, wholes
-- settling): it moves from one row to the other with every live document that has it.
CREATE TRIGGER contents_counted_update AFTER UPDATE OF state, parts, truncated ON contents
WHEN old.state != new.state OR old.parts != new.parts OR old.truncated != new.truncated
BEGIN
    UPDATE state_counts SET
        contents = state_counts.contents + (state_counts.state = new.state) * (new.parts = 0)
                            - (state_counts.state = old.state) * (old.parts = 0),
        documents = state_counts.documents + d.n * ((state_counts.state = new.state) - (state_counts.state = old.state)),
        chunks = state_counts.chunks + d.n * ((state_counts.state = new.state) * max(new.parts, 1)
                                 - (state_counts.state = old.state) * max(old.parts, 1)),
        truncated = state_counts.truncated + d.n * ((state_counts.state = new.state) * new.truncated
                                       - (state_counts.state = old.state) * old.truncated)
    FROM (SELECT count(*) AS n FROM documents WHERE hash = new.hash AND deleted = 0) AS d
    WHERE state_counts.state IN (old.state, new.state);
END;

CREATE TRIGGER contents_counted_insert AFTER INSERT ON contents
BEGIN
    UPDATE state_counts SET contents = state_counts.contents + (new.parts = 0), documents = state_counts.documents + d.n,
        chunks = state_counts.chunks + d.n * max(new.parts, 1), truncated = state_counts.truncated + d.n * new.truncated
    FROM (SELECT count(*) AS n FROM documents WHERE hash = new.hash AND deleted = 0) AS d
    WHERE state_counts.state = new.state;
END;

CREATE TRIGGER contents_counted_delete AFTER DELETE ON contents
BEGIN
    UPDATE state_counts SET contents = state_counts.contents - (old.parts = 0), documents = state_counts.documents - d.n,
        chunks = state_counts.chunks - d.n * max(old.parts, 1), truncated = state_counts.truncated - d.n * old.truncated
    FROM (SELECT count(*) AS n FROM documents WHERE hash = old.hash AND deleted = 0) AS d
    WHERE state_counts.state = old.state;
END;

-- A document is added, changes content, is deleted or comes back: its live/deleted row, and the
-- state row of its content (a live document's only).
CREATE TRIGGER documents_counted_insert AFTER INSERT ON documents
BEGIN
    UPDATE state_counts SET documents = state_counts.documents + 1
        WHERE state = CASE new.deleted WHEN 0 THEN 'live' ELSE 'deleted' END;
    UPDATE state_counts SET documents = state_counts.documents + 1, chunks = state_counts.chunks + max(c.parts, 1),
        truncated = state_counts.truncated + c.truncated
    FROM contents AS c WHERE new.deleted = 0 AND c.hash = new.hash AND state_counts.state = c.state;
END;

CREATE TRIGGER documents_counted_update AFTER UPDATE OF hash, deleted ON documents
WHEN old.hash != new.hash OR old.deleted != new.deleted
BEGIN
    UPDATE state_counts SET documents = state_counts.documents
        + (state_counts.state = CASE new.deleted WHEN 0 THEN 'live' ELSE 'deleted' END)
        - (state_counts.state = CASE old.deleted WHEN 0 THEN 'live' ELSE 'deleted' END)
        WHERE old.deleted != new.deleted AND state IN ('live', 'deleted');
    UPDATE state_counts SET documents = state_counts.documents - 1, chunks = state_counts.chunks - max(c.parts, 1),
        truncated = state_counts.truncated - c.truncated
    FROM contents AS c WHERE old.deleted = 0 AND c.hash = old.hash AND state_counts.state = c.state;
    UPDATE state_counts SET documents = state_counts.documents + 1, chunks = state_counts.chunks + max(c.parts, 1),
        truncated = state_counts.truncated + c.truncated
    FROM contents AS c WHERE new.deleted = 0 AND c.hash = new.hash AND state_counts.state = c.state;
END;

CREATE TRIGGER documents_counted_delete AFTER DELETE ON documents
BEGIN
    UPDATE state_counts SET documents = state_counts.documents - 1
        WHERE state = CASE old.deleted WHEN 0 THEN 'live' ELSE 'deleted' END;
    UPDATE state_counts SET documents = state_counts.documents - 1, chunks = state_counts.chunks - max(c.parts, 1),
        truncated = state_counts.truncated - c.truncated
    FROM contents AS c WHERE old.deleted = 0 AND c.hash = old.hash AND state_counts.state = c.state;
END;

-- The counts of an existing index, from its rows. Documents by the state of their content: every
-- content in hash order against the index of documents by hash (both in hash order, no random probe
-- of a large table), less the deleted documents (few, read once through `documents`).
UPDATE state_counts SET contents = x.n FROM (
    SELECT state, count(*) AS n FROM contents WHERE parts = 0 GROUP BY state) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = x.n, chunks = x.n_chunks, truncated = x.n_truncated FROM (
    SELECT c.state, count(*) AS n, sum(max(c.parts, 1)) AS n_chunks, sum(c.truncated) AS n_truncated
    FROM contents AS c JOIN documents AS d INDEXED BY documents_by_hash ON d.hash = c.hash
    GROUP BY c.state) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = state_counts.documents - x.n, chunks = state_counts.chunks - x.n_chunks,
    truncated = state_counts.truncated - x.n_truncated FROM (
    SELECT c.state, count(*) AS n, sum(max(c.parts, 1)) AS n_chunks, sum(c.truncated) AS n_truncated
    FROM documents AS d JOIN contents AS c ON c.hash = d.hash WHERE d.deleted != 0
    GROUP BY c.state) AS x
    WHERE state_counts.state = x.state;
UPDATE state_counts SET documents = (SELECT count(*) FROM documents WHERE deleted = 0) WHERE state = 'live';
UPDATE state_counts SET documents = (SELECT count(*) FROM documents WHERE deleted != 0)
    WHERE state = 'deleted';
