-- A document serves its own content (documents.hash) once that content is done, whatever ready_hash
-- holds; ready_hash is the content it served before, kept while its own waits (issue 11, the driver).
-- Until now a commit rewrote every document of the contents it marked done (ready_hash = hash): at a
-- million documents that was a sixth of the embed phase. Readers now take the served content as
--     iif((SELECT state FROM contents WHERE hash = d.hash) = 'done', d.hash, d.ready_hash)
-- (indexer/_sql.py, SERVED_HASH), which reads a manifest of any version right, since before this one
-- ready_hash was hash whenever that content was done. No row changes: this number only keeps an
-- older indexer, which reads ready_hash alone, from opening a manifest written this way.
SELECT 1;
