-- Documents find their content by its number (contents.seq, claim order) instead of by hash (issue
-- 11, the driver). The index of documents by hash took each new document on a random page of a
-- B-tree as large as the documents, and each commit looked its documents up there at random: at a
-- million documents a scan and a commit rewrote most of that index's pages in every transaction.
-- By number, a scan batch's new documents land together at the index's end (its contents are
-- numbered as it stages them), and a commit finds the documents of its claims, numbered in a row,
-- on neighbouring pages.
-- documents.seq is the number of the content with the document's hash (NULL only for a deleted
-- document whose content compact dropped); the scan sets both, together.
ALTER TABLE documents ADD COLUMN seq INTEGER;
UPDATE documents SET seq = (SELECT c.seq FROM contents c WHERE c.hash = documents.hash);
DROP INDEX documents_by_hash;
CREATE INDEX documents_by_content ON documents (seq, deleted);

-- As in 0009, with the documents found by number.
DROP TRIGGER contents_counted_update;
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
