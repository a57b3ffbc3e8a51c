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
