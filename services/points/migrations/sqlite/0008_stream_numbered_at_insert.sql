-- SQLite numbers entries inside the writing transaction, as before: nothing
-- changes here (the PostgreSQL migration of this number retires the old
-- publisher's sequence).
SELECT 1;
