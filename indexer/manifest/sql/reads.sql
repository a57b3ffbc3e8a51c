-- What readers read, each on a connection of its own (indexer/manifest/_reads.py). The queries of the
-- served documents and chunks, which compose the content a document serves, are in that module.

-- name: pin_snapshot
-- A deferred transaction takes its snapshot at its first read: this one, as the view is made.
SELECT 1 FROM documents LIMIT 1

-- name: slotted_contents
-- Through the index on slot, whose rows lie in claim order, as slots were given.
SELECT hash, slot FROM contents WHERE slot IS NOT NULL

-- name: live_documents
SELECT id, hash, ready_hash FROM documents WHERE deleted = 0

-- name: done_slots
SELECT hash, slot FROM contents WHERE state = 'done' AND slot IS NOT NULL

-- name: has_chunks_table
-- A read-only manifest from before checksums were kept has no such table.
SELECT 1 FROM sqlite_master WHERE name = 'chunks'

-- name: chunk_file_checksums
-- The first 8 bytes of a chunk's checksums are its whole file's (`VectorStore.checksums_of`).
SELECT chunk, substr(checksum, 1, 8) FROM chunks

-- name: whole_chunk_slots
SELECT c.slot FROM text_chunks t JOIN contents c
    ON c.hash = t.hash WHERE t.whole = ? ORDER BY t.ordinal
