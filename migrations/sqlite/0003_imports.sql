-- Checkpoints of CSV imports: the last file line committed, written in the same transaction
-- as the rows, so a re-run after a crash resumes exactly where the last commit ended.
CREATE TABLE imports (
    job          TEXT PRIMARY KEY,
    portal_id    INTEGER NOT NULL,
    object_type  TEXT NOT NULL,
    line         INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) WITHOUT ROWID;

-- Imported records carry no history rows: their first values are their current properties at
-- created_at, written out as history only when the record first changes. This keeps a bulk
-- import to two rows per record instead of one per property.
ALTER TABLE objects ADD COLUMN history_pending INTEGER NOT NULL DEFAULT 0;
