-- One row a sync, so that `status` can say what is running and how the last run ended.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    started_at  REAL NOT NULL,
    finished_at REAL,
    owner       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('running', 'finished', 'failed', 'interrupted')),
    summary     TEXT                     -- JSON of the run's summary once it ends
);
