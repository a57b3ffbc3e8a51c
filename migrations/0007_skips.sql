-- The records the last complete scan skipped, so that a sync run again and again (cron) warns about a
-- skipped record once, and again only when its place or its reason changes; repeats are summarized in
-- one line.
CREATE TABLE skips (
    place  TEXT PRIMARY KEY,         -- "file:line", "file row N" or a path: where the record was read
    reason TEXT NOT NULL
) WITHOUT ROWID;
