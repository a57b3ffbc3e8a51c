-- Long documents in chunks (README "Chunks"). A document whose text fits the model's window is one
-- content, as before. A longer one is a "whole": a contents row with `parts` > 0 and no text of its
-- own, whose chunks are contents (embedded once across all documents, like any content) listed in
-- text_chunks. A whole is done once all its parts are done, failed once one of them failed for good.
ALTER TABLE contents ADD COLUMN parts INTEGER NOT NULL DEFAULT 0;     -- 0: embedded itself
-- 1: embedded whole although longer than the model's window (an unchunked index): cut at the window.
ALTER TABLE contents ADD COLUMN truncated INTEGER NOT NULL DEFAULT 0;

-- The ordered chunks of each whole, keyed like contents by the document text's hash, so that identical
-- documents share one list.
CREATE TABLE text_chunks (
    whole      BLOB NOT NULL,            -- contents.hash of the whole document text (parts > 0)
    ordinal    INTEGER NOT NULL,         -- 0, 1, ... in text order
    hash       BLOB NOT NULL,            -- contents.hash of the chunk's text
    char_start INTEGER NOT NULL,         -- the chunk is text[char_start:char_end] of the document
    char_end   INTEGER NOT NULL,
    PRIMARY KEY (whole, ordinal)
) WITHOUT ROWID;
CREATE INDEX text_chunks_by_hash ON text_chunks (hash);

-- Claims take embeddable contents only: wholes (no text) need no entry.
DROP INDEX contents_pending_by_chars;
CREATE INDEX contents_pending_by_chars ON contents (chars) WHERE state = 'pending' AND parts = 0;
