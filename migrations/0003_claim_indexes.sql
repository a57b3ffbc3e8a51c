-- Indexes that claims and commits maintain per row, cut to what the queries use.
-- Claims look for pending contents by length only: done, claimed and failed rows need no entry, so a
-- commit no longer moves one per row, and the index stays as small as the backlog.
DROP INDEX contents_by_state_chars;
CREATE INDEX contents_pending_by_chars ON contents (chars) WHERE state = 'pending';
-- Only maintenance (verify --repair, compact) looks documents up by ready_hash, in one pass each; every
-- commit paid an insert and a delete in this index per row.
DROP INDEX documents_by_ready_hash;
